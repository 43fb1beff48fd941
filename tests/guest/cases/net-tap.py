"""net-tap's machine: the virtio-net NIC (no backend: its frames end inside QEMU) and the e1000e
(no backend), for the PCI checks over uio_pci_generic; the TAPs live in a network namespace
inside the guest."""


def configure(guest):
    guest.only("vnet0", "e1000e0")

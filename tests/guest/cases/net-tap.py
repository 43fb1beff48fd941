"""net-tap's machine: only the virtio-net NIC (no backend), for the "no driver" check; the TAPs
live in a network namespace inside the guest."""


def configure(guest):
    guest.only("vnet0")

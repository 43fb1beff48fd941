"""What the bindings do without a device: import, error translation, argument validation.
Run by ctest (label unit) with PYTHONPATH at the build tree's python/ directory."""
import errno
import os
import unittest

import ring3


class ImportTest(unittest.TestCase):
    def test_public_names(self):
        for name in ("open", "Device", "Bar", "DmaBuffer", "Interrupt", "Error"):
            self.assertTrue(hasattr(ring3, name), name)
        self.assertTrue(callable(ring3.Interrupt.wait_async))

    def test_error_is_an_oserror(self):
        self.assertTrue(issubclass(ring3.Error, OSError))
        self.assertEqual(ring3.Error.__module__, "ring3")
        self.assertEqual(ring3.Error.__name__, "Error")


class ErrorTranslationTest(unittest.TestCase):
    def open_error(self, spec):
        with self.assertRaises(ring3.Error) as caught:
            ring3.open(spec)
        return caught.exception

    def test_malformed_bdf(self):
        e = self.open_error("vfio:zz:00.0")
        # ring3::pci::Address::parse quotes the input and the expected form.
        self.assertIn("'zz:00.0'", str(e))
        self.assertIn("DDDD:BB:DD.F", str(e))
        self.assertEqual(e.errno, errno.EINVAL)
        self.assertEqual(str(e), f"{e.operation} {e.object}: {e.reason}")

    def test_device_numbers_out_of_range(self):
        self.assertIn("'00:20.0'", str(self.open_error("uio:00:20.0")))  # device 32 > 31

    def test_absent_device(self):
        e = self.open_error("vfio:00ff:1f:1f.7")
        self.assertIn("00ff:1f:1f.7", str(e))
        self.assertNotEqual(e.errno, 0)

    def test_unknown_backend(self):
        e = self.open_error("nosuch:0000:00:02.0")
        self.assertIn("nosuch", str(e))

    def test_catchable_as_oserror(self):
        with self.assertRaises(OSError):
            ring3.open("vfio:zz:00.0")


class ArgumentValidationTest(unittest.TestCase):
    def test_open_arguments(self):
        with self.assertRaises(TypeError):
            ring3.open(42)
        with self.assertRaises(ValueError):
            ring3.open("vfio:0000:00:02.0", dma_max_size=0)
        with self.assertRaises(ValueError) as caught:
            ring3.open("vfio:0000:00:02.0", huge_pages="sometimes")
        self.assertIn("'sometimes'", str(caught.exception))

    def test_objects_come_only_from_a_device(self):
        for cls in (ring3.Device, ring3.Bar, ring3.DmaBuffer, ring3.Interrupt):
            with self.assertRaises(TypeError, msg=cls.__name__):
                cls()


class AsyncWaitTest(unittest.TestCase):
    """wait_async over a stand-in with an eventfd: the asyncio plumbing without a device."""

    class FakeVector:
        wait_async = ring3.Interrupt.wait_async

        def __init__(self):
            self.fd = os.eventfd(0, os.EFD_NONBLOCK)

        def fileno(self):
            return self.fd

        def drain(self):
            total = 0
            while True:
                try:
                    total += os.eventfd_read(self.fd)
                except BlockingIOError:
                    return total

    def test_wakes_on_signal(self):
        import asyncio
        vector = self.FakeVector()

        async def main():
            waiter = asyncio.ensure_future(vector.wait_async())
            await asyncio.sleep(0.01)
            self.assertFalse(waiter.done())
            os.eventfd_write(vector.fd, 3)
            return await asyncio.wait_for(waiter, 5)

        try:
            self.assertEqual(asyncio.run(main()), 3)
        finally:
            os.close(vector.fd)


if __name__ == "__main__":
    unittest.main()

"""Boot-slot backends: one module per bootloader, all implementing `base.BootBackend`."""

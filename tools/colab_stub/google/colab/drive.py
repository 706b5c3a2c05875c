"""``google.colab.drive`` for the Colab check: ``mount`` makes a local folder look like Drive."""
import os


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    """Create ``mountpoint/MyDrive`` (the check points ``NSA_DRIVE_MOUNT`` at a temporary folder)."""
    os.makedirs(os.path.join(os.path.expanduser(mountpoint), "MyDrive"), exist_ok=True)
    print(f"Mounted at {mountpoint}")


def flush_and_unmount(timeout_ms=24 * 3600 * 1000):
    """Nothing to flush: the folder is local."""

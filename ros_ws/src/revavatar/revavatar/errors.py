"""Typed errors of RevAvatar.

Every error a user can cause (bad file, bad calibration, bad bag, bad selfie) derives from
:class:`RevAvatarError`; the CLI prints its message on one line and exits with status 2, so
scripts can tell a user error from a crash (status 1 with a traceback).
"""

__all__ = [
    "BackendUnavailableError",
    "BagError",
    "CalibrationError",
    "EncodingError",
    "EnrollmentError",
    "InputError",
    "ModelLoadError",
    "NoFaceError",
    "RevAvatarError",
]


class RevAvatarError(Exception):
    """Base of all user-facing errors."""


class InputError(RevAvatarError):
    """A missing, unreadable or undecodable input file or device."""


class CalibrationError(RevAvatarError):
    """A headset calibration YAML that does not validate (names file, key and expectation)."""


class BagError(RevAvatarError):
    """A session bag that cannot be read or lacks the expected topics."""


class EncodingError(RevAvatarError):
    """An image encoding outside mono8, mono16, rgb8, bgr8, rgba8, bgra8, or a malformed buffer."""


class EnrollmentError(RevAvatarError):
    """A DP (selfie) image that is unfit for enrollment; the message says why."""


class NoFaceError(EnrollmentError):
    """No face was found in an image that needs one."""


class BackendUnavailableError(RevAvatarError):
    """A landmark or inference backend that is not installed or has no local weights."""


class ModelLoadError(RevAvatarError):
    """Trained weights that are missing or do not match their architecture."""

"""Python client for seatwarden, the floating-license server.

::

    from seatwarden_client import LicenseClient, NoSeatsAvailable

    client = LicenseClient("https://licenses.example.com", key, app="acme-cad")
    with client as seat:          # acquire, heartbeat in the background, release
        print(seat.tier, seat.features)

See the package README for the offline behaviour, the hardware id, the
cache, and the exceptions.
"""

__version__ = "0.1.0"

import logging  # noqa: E402 - after __version__, which submodules import

from .aio import AsyncLicenseClient
from .cache import CacheDir, default_cache_dir, default_config_dir
from .client import LicenseClient
from .clock import Clock, SystemClock
from .errors import (
    BorrowingDisabled,
    BorrowTooLong,
    Forbidden,
    IdentityRequired,
    InvalidHours,
    InvalidRequest,
    InvalidToken,
    LicenseExpired,
    LicenseExpiredOffline,
    LicenseInactive,
    LicenseNotFound,
    LicenseSuspended,
    LicenseUnusable,
    MachineLimitReached,
    MachineNotActivated,
    NoSeatsAvailable,
    NotAcquired,
    QueueTicketNotFound,
    QueueTimeout,
    RateLimited,
    SeatwardenError,
    ServerError,
    ServerUnavailable,
    ServerUnreachable,
    SessionEnded,
    SessionExpired,
    SessionGone,
    SessionNotFound,
    SessionRevoked,
    Unauthorized,
)
from .fingerprint import hardware_id
from .models import LicenseFile, QueueStatus, Release, Seat, SeatStatus, Validation
from .retry import RetryPolicy
from .tokens import LicenseClaims, SeatClaims

# A library logs; the application decides where it goes (and nothing is
# printed when it doesn't configure logging).
logging.getLogger("seatwarden_client").addHandler(logging.NullHandler())

__all__ = [
    "AsyncLicenseClient",
    "BorrowTooLong",
    "BorrowingDisabled",
    "CacheDir",
    "Clock",
    "Forbidden",
    "IdentityRequired",
    "InvalidHours",
    "InvalidRequest",
    "InvalidToken",
    "LicenseClaims",
    "LicenseClient",
    "LicenseExpired",
    "LicenseExpiredOffline",
    "LicenseFile",
    "LicenseInactive",
    "LicenseNotFound",
    "LicenseSuspended",
    "LicenseUnusable",
    "MachineLimitReached",
    "MachineNotActivated",
    "NoSeatsAvailable",
    "NotAcquired",
    "QueueStatus",
    "QueueTicketNotFound",
    "QueueTimeout",
    "RateLimited",
    "Release",
    "RetryPolicy",
    "Seat",
    "SeatClaims",
    "SeatStatus",
    "SeatwardenError",
    "ServerError",
    "ServerUnavailable",
    "ServerUnreachable",
    "SessionEnded",
    "SessionExpired",
    "SessionGone",
    "SessionNotFound",
    "SessionRevoked",
    "SystemClock",
    "Unauthorized",
    "Validation",
    "__version__",
    "default_cache_dir",
    "default_config_dir",
    "hardware_id",
]

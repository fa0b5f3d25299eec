"""gunicorn entry point for Keystone: ``keystone_wsgi:application``.

Runs in the OpenStack server venv, not in bulktag's. Keystone's WSGI module hands ``sys.argv``
to oslo.config, which rejects gunicorn's own command-line options; clearing the arguments
before the import lets Keystone read only ``OS_KEYSTONE_CONFIG_DIR``.
"""

import sys

sys.argv = sys.argv[:1]

from keystone.wsgi.api import application  # type: ignore[import-not-found, unused-ignore]  # noqa: E402

__all__ = ["application"]

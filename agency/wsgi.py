from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agency.settings")
application = get_wsgi_application()

from agency.startup import freeze_loaded_objects  # noqa: E402 - needs the settings above

freeze_loaded_objects()

"""The agency's time zone for tests that build moments by hand.

Days and months are the agency's (``CLIENTMETER_TIME_ZONE``), so a test that writes "noon
on 2 November" means noon there: it then passes in any zone, and the instants matrix
(``bin/instants``) can run it in a zone with summer time. Tests about one zone in
particular set ``settings.TIME_ZONE`` themselves and keep their UTC moments.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from django.conf import settings

AGENCY_TZ = ZoneInfo(settings.TIME_ZONE)

"""gunicorn settings for the `web` service, read from the environment."""

import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"  # noqa: S104 (inside a container)
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
timeout = int(os.environ.get("WEB_TIMEOUT", "120"))
accesslog = "-"
errorlog = "-"

# Request bodies: gunicorn has no body-size limit of its own. The app answers 413 from the Content-Length
# header, before reading a byte, for a body over UPLOAD_MAX_BYTES (plus DATA_UPLOAD_MAX_MEMORY_SIZE of form
# fields), and 411 for a body without one (prefstudio/uploads.py); compose sets UPLOAD_MAX_BYTES for the web
# and worker services from one variable. A sync worker must receive the largest allowed upload within
# `timeout` (WEB_TIMEOUT): 512 MiB in 120 s needs about 4.3 MB/s from the client.

"""The web dashboard at /ui: server-rendered pages (jinja2) over the controller's own service,
a little JavaScript for live updates and actions, charts by Chart.js (vendored by scripts/setup
from frontend/package-lock.json into static/vendor/)."""

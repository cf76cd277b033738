"""The harness in Locust's web UI: a guard on what the HTTP API may change, and a verdict tab."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from flask import Response, jsonify, request
from locust.runners import STATE_RUNNING, STATE_STOPPED

from loadtests.options import refused_fields

log = logging.getLogger("namedpiper")

# The tab's key in Locust's extended_tabs / extended_tables / extended_stats.
TAB_KEY = "namedpiper"
TAB_COLUMNS = [("item", "item"), ("threshold", "expected"), ("observed", "observed"), ("result", "result")]
# Locust's POST /user sets attributes of the user class: nothing a browser needs for this harness.
REFUSED_POSTS = ("/user",)
# The current run's report.html, charts included (while it runs: the timeline so far, reloading itself).
CHARTS_PATH = "/namedpiper/charts"


def install(
    web_ui,
    rows: Callable[[], list[dict]],
    verdict: Callable[[], dict],
    finishing: Callable[[], bool],
    charts: Callable[[], str] | None = None,
) -> None:
    """Guard the API and add the verdict tab; rows() gives the tab's table, verdict() the JSON at /namedpiper,
    finishing() whether a stopped run is still draining or verifying, charts() the page at CHARTS_PATH."""
    app = web_ui.app

    @app.before_request
    def _guard() -> tuple[Response, int] | None:
        if request.method != "POST":
            return None
        path = request.path.rstrip("/")
        if path.endswith(REFUSED_POSTS):
            log.warning("web UI: refused POST %s (changing the user class is not allowed)", request.path)
            return jsonify({"success": False, "message": f"POST {request.path} is disabled by namedpiper"}), 403
        if path.endswith("/swarm"):
            bad = refused_fields(set(request.form.keys()))
            if bad:
                log.warning(
                    "web UI: refused a start that sets %s (only load-shaping options may be set from the "
                    "web UI; give the others on the command line)",
                    ", ".join(bad),
                )
                return jsonify(
                    {
                        "success": False,
                        "message": f"namedpiper: {', '.join(bad)} cannot be set from "
                        "the web UI; give them on the command line or in the config file",
                    }
                ), 403
        return None

    web_ui.template_args["extended_tabs"] = [{"title": "namedpiper verdict", "key": TAB_KEY}]
    web_ui.template_args["extended_tables"] = [
        {"key": TAB_KEY, "structure": [{"key": key, "title": title} for key, title in TAB_COLUMNS]}
    ]

    @app.after_request
    def _extend_stats(response: Response) -> Response:
        if request.path.rstrip("/").endswith("/stats/requests") and response.is_json:
            data = response.get_json()
            data["extended_stats"] = [{"key": TAB_KEY, "data": rows()}]
            if finishing() and data.get("state") == STATE_STOPPED:
                # Locust's page polls only while a run is spawning or running: the drain is still part of the run,
                # and the page must keep polling to show its progress and then the verdict.
                data["state"] = STATE_RUNNING
            response.set_data(json.dumps(data))
        return response

    @app.route("/namedpiper")
    @web_ui.auth_required_if_enabled
    def _verdict() -> Response:
        return jsonify(verdict())

    if charts is not None:

        @app.route(CHARTS_PATH)
        @web_ui.auth_required_if_enabled
        def _charts() -> Response:
            return Response(charts(), mimetype="text/html")

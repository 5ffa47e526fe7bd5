#!/usr/bin/env python3
"""Helper for scripts/e2e.sh: serves hls.js from a local directory (so the browser test
needs no CDN) and records the playback figures the /watch page POSTs.

usage: e2e_collector.py PORT STATIC_DIR REPORT_FILE
Each POST body to /report/NAME is appended as one JSON line {"name": NAME, ...} to
REPORT_FILE (bodies over 64 KiB are refused). Binds 127.0.0.1 only.
"""
import http.server
import json
import sys
import threading

PORT, STATIC, REPORTS = int(sys.argv[1]), sys.argv[2], sys.argv[3]
LOCK = threading.Lock()


class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=STATIC, **kwargs)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if not self.path.startswith("/report/") or length > 65536:
            self.send_error(400)
            return
        try:
            figures = json.loads(self.rfile.read(length))
        except ValueError:
            self.send_error(400)
            return
        figures["name"] = self.path[len("/report/"):]
        with LOCK, open(REPORTS, "a") as f:
            f.write(json.dumps(figures) + "\n")
        self.send_response(204)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()

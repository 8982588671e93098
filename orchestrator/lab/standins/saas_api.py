"""The SaaS API of litellm-saas-stack.md (a FastAPI app there), as a lab stand-in.

The operator's own service: the seed shows what it answers — `GET /health` ->
`{"status": "healthy", "service": "saas-llm-api"}`, `POST /api/jobs/create` with
`{team_id, job_type, metadata}` -> a job id — and how it is wired: `DATABASE_URL` (the same
PostgreSQL as LiteLLM), `LITELLM_PROXY_URL` and `LITELLM_MASTER_KEY`. This stand-in keeps
that contract with real parts behind it: jobs are rows in PostgreSQL (the real server of the
lab, through Debian's `psql` with the connection from DATABASE_URL in its environment, never
on its command line; the `job_tracking` table is created at start, the seed's migration
step), and `POST /api/jobs/<id>/complete` sends the job's prompt to LiteLLM with the master
key and stores the answer. `GET /api/jobs/<id>` reads the row back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

try:
    from . import _base
except ImportError:  # run as a script inside a lab image
    import _base  # type: ignore[no-redef]

SCHEMA = """CREATE TABLE IF NOT EXISTS job_tracking (
  job_id text PRIMARY KEY, team_id text NOT NULL, job_type text NOT NULL,
  status text NOT NULL DEFAULT 'pending', metadata jsonb NOT NULL DEFAULT '{}',
  result text, created_at timestamptz NOT NULL DEFAULT now());
"""


def pg_env(url: str) -> dict[str, str]:
    """libpq's environment for a postgresql:// URL (user, password, host, port, database)."""
    parts = urllib.parse.urlsplit(url)
    env = {"PGHOST": parts.hostname or "127.0.0.1", "PGPORT": str(parts.port or 5432),
           "PGUSER": urllib.parse.unquote(parts.username or "postgres"),
           "PGDATABASE": parts.path.lstrip("/") or "postgres", "PGCONNECT_TIMEOUT": "5"}
    if parts.password:
        env["PGPASSWORD"] = urllib.parse.unquote(parts.password)
    return env


def psql(sql: str, variables: dict[str, str] | None = None) -> str:
    """Run SQL through psql's stdin; values are psql variables, quoted by psql (:'name')."""
    argv = ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"]
    for key, value in (variables or {}).items():
        argv += ["-v", f"{key}={value}"]
    env = {**os.environ, **pg_env(os.environ.get("DATABASE_URL", ""))}
    result = subprocess.run(argv, input=sql, capture_output=True, text=True, env=env,
                            timeout=20, check=False)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip() or f"psql exit {result.returncode}")
    return result.stdout.strip()


def create_job(team: str, kind: str, metadata: Any) -> str:
    job_id = f"job_{uuid.uuid4().hex[:16]}"
    psql("INSERT INTO job_tracking (job_id, team_id, job_type, metadata) "
         "VALUES (:'id', :'team', :'kind', :'meta'::jsonb);\n",
         {"id": job_id, "team": team, "kind": kind, "meta": json.dumps(metadata)})
    return job_id


def read_job(job_id: str) -> dict[str, Any] | None:
    row = psql("SELECT row_to_json(j) FROM job_tracking j WHERE job_id = :'id';\n", {"id": job_id})
    return json.loads(row) if row else None


def ask_litellm(model: str, prompt: str) -> str:
    base = os.environ.get("LITELLM_PROXY_URL", "http://litellm:4000").rstrip("/")
    payload = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    req = urllib.request.Request(f"{base}/v1/chat/completions", data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {os.environ.get('LITELLM_MASTER_KEY', '')}"})
    with urllib.request.urlopen(req, timeout=60) as response:
        return str(json.loads(response.read())["choices"][0]["message"]["content"])


class SaasHandler(_base.Handler):
    name = "saas-api"

    def route(self, method: str, path: str) -> None:
        if path == "/health":
            return self.health()
        if path == "/api/jobs/create" and method == "POST":
            return self.create()
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[:2] == ["api", "jobs"] and method == "GET":
            return self.show(parts[2])
        if len(parts) == 4 and parts[:2] == ["api", "jobs"] and parts[3] == "complete" and method == "POST":
            return self.complete(parts[2])
        self.send_json(404, {"detail": "Not Found"})

    def health(self) -> None:
        try:
            psql("SELECT 1;\n")
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            return self.send_json(503, {"status": "unhealthy", "database": str(exc)[:200]})
        self.send_json(200, {"status": "healthy", "service": "saas-llm-api"})

    def create(self) -> None:
        body = self.read_json()
        team, kind = str(body.get("team_id") or ""), str(body.get("job_type") or "")
        if not team or not kind:
            return self.send_json(422, {"detail": "team_id and job_type are required"})
        job_id = create_job(team, kind, body.get("metadata") or {})
        self.send_json(200, {"job_id": job_id, "status": "pending"})

    def show(self, job_id: str) -> None:
        job = read_job(job_id)
        if job is None:
            return self.send_json(404, {"detail": "job not found"})
        self.send_json(200, job)

    def complete(self, job_id: str) -> None:
        body = self.read_json()
        job = read_job(job_id)
        if job is None:
            return self.send_json(404, {"detail": "job not found"})
        try:
            text = ask_litellm(str(body.get("model") or "default"), str(body.get("prompt") or ""))
        except (OSError, urllib.error.URLError, KeyError, ValueError) as exc:
            return self.send_json(502, {"detail": f"LiteLLM: {exc}"})
        psql("UPDATE job_tracking SET status = 'completed', result = :'text' WHERE job_id = :'id';\n",
             {"text": text, "id": job_id})
        self.send_json(200, read_job(job_id))


def main(argv: list[str]) -> int:
    port = int(os.environ.get("PORT") or 8000)
    for attempt in range(60):  # the database may still be starting: migrate when it answers
        try:
            psql(SCHEMA)
            break
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            if attempt == 59:
                _base.log("saas-api", f"database not ready: {exc}")
            time.sleep(1)
    _base.serve(SaasHandler, os.environ.get("HOST", "0.0.0.0"), port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

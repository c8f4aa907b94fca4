"""The user's commands: `histo login`, `upload`, `jobs`, `get`, `verify`. Each failure is one
readable line on stderr and exit 1 (cli.main); the token comes from the token file only."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ..edge import receipts
from .http import Api, ApiError, ProgressBody, multipart, progress_bar, retrying
from .login import client_credentials, login
from .pkce import CallbackError
from .session import Session, SessionError, default_path

EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png"}
MAX_UPLOAD = 256 * 1024 * 1024  # read no more than this into memory (the master refuses far less)


def _fail(msg: str) -> SystemExit:
    return SystemExit(f"histo: {msg}")


def _read(path: str, what: str, limit: int | None = None) -> bytes:
    try:
        p = Path(path)
        if limit is not None and p.stat().st_size > limit:
            raise _fail(f"{what} {path} is larger than {limit // (1024 * 1024)} MiB")
        return p.read_bytes()
    except OSError as exc:
        raise _fail(f"cannot read the {what} {path}: {exc.strerror}") from None


def _session(a: argparse.Namespace) -> tuple[Session, Api]:
    try:
        s = Session.load(Path(a.token_file))
    except SessionError as exc:
        raise _fail(str(exc)) from None
    return s, Api(s.url, s.ca, s.access_token)


def _run(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ApiError as exc:
        raise _fail(str(exc)) from None
    except CallbackError as exc:
        raise _fail(f"login: {exc}") from None


# -- commands -----------------------------------------------------------------------------------
def cmd_login(a: argparse.Namespace) -> None:
    url = a.url or os.environ.get("HISTO_URL")
    ca = a.ca or os.environ.get("HISTO_CA")
    if not url or not ca:
        raise _fail("login: give --url and --ca (or set HISTO_URL and HISTO_CA)")
    api = _run(Api, url, ca)
    if a.client_file:  # a script: client credentials from a 0600 JSON file {client_id, client_secret}
        try:
            cred = json.loads(_read(a.client_file, "client file"))
            cid, secret = str(cred["client_id"]), str(cred["client_secret"])
        except (ValueError, KeyError, TypeError):
            raise _fail(f"login: {a.client_file} is not a JSON {{client_id, client_secret}} file") from None
        session = _run(client_credentials, api, ca, cid, secret, a.scope)
    else:
        session = _run(login, api, ca, lambda m: print(m, file=sys.stderr, flush=True), not a.no_browser,
                       a.timeout)
    session.save(Path(a.token_file))
    until = time.strftime("%H:%M:%S", time.localtime(session.expires_at))
    print(f"signed in as {session.sub} ({session.role}) until {until}; token in {a.token_file}")


def cmd_upload(a: argparse.Namespace) -> None:
    s, api = _session(a)
    data = _read(a.image, "image", MAX_UPLOAD)
    if not data:
        raise _fail(f"{a.image} is empty")
    body, ctype = multipart({"mode": a.mode}, "image", Path(a.image).name, data)
    report = progress_bar() if not a.quiet else (lambda done, total: None)
    # --timeout bounds the whole: a 503 with Retry-After (Vault or the store quorum away for a
    # moment) and a refused connection (the public address moving) are asked again until then
    deadline = time.monotonic() + a.timeout
    doc = _run(retrying, lambda: api.json("POST", "/api/v1/jobs", body=ProgressBody(body, report),
                                          headers={"Content-Type": ctype}, length=len(body)), deadline)
    job = doc.get("id")
    print(f"job {job} accepted (mode {a.mode})", file=sys.stderr)
    if a.no_wait:
        print(job)
        return
    while True:
        state = _run(retrying, lambda: api.json("GET", f"/api/v1/jobs/{job}?wait=20"), deadline, True)
        if state.get("state") in ("done", "failed") or time.monotonic() > deadline:
            break
    if state.get("state") != "done":
        raise _fail(f"job {job} is {state.get('state')}: {state.get('reason') or 'not finished in time'}")
    print(job)


def cmd_jobs(a: argparse.Namespace) -> None:
    s, api = _session(a)
    doc = _run(api.json, "GET", f"/api/v1/jobs?limit={a.limit}")
    jobs = doc.get("jobs") or []
    if not jobs:
        print("no jobs")
    for j in jobs:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(j.get("created") or 0)))
        print(f"{j.get('id')}  {str(j.get('state')):8}  {str(j.get('mode')):5}  {when}  {j.get('owner')}")


def cmd_get(a: argparse.Namespace) -> None:
    s, api = _session(a)
    job = a.id
    if not job.isalnum() or len(job) > 64:
        raise _fail(f"{job!r} is not a job id")
    out = Path(a.out or job)
    status, headers, image = _run(api.call, "GET", f"/api/v1/jobs/{job}/result")
    ext = EXTENSIONS.get(headers.get("Content-Type", "").split(";")[0], ".bin")
    files = {f"result{ext}": image}
    for name, path in (("histogram.json", "histogram"), ("histogram.png", "histogram.png"),
                       ("receipt.jws", "receipt")):
        files[name] = _run(api.call, "GET", f"/api/v1/jobs/{job}/{path}")[2]
    files["receipt-keys.json"] = _run(api.call, "GET", "/api/v1/receipts/keys")[2]
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (out / name).write_bytes(data)
    except OSError as exc:
        raise _fail(f"cannot write into {out}: {exc.strerror}") from None
    print(f"job {job}: {', '.join(str(out / n) for n in files)}")
    print(f"check it: histo verify {out / ('result' + ext)} {out / 'receipt.jws'}")


def cmd_verify(a: argparse.Namespace) -> None:
    """Offline: the signature against the published keys, the claims, the result's (and upload's) SHA-256."""
    jws = _read(a.receipt, "receipt").decode("ascii", "replace").strip()
    image = _read(a.result, "result")
    upload = _read(a.upload, "upload") if a.upload else None
    keys_path = a.keys or str(Path(a.receipt).parent / "receipt-keys.json")
    def keys_for(kid: str) -> dict[str, str]:
        return receipts.load_keys(_read(keys_path, "keys file").decode("utf-8", "replace"), kid)
    print_verified(jws, keys_for, image, upload, "verify", keys_path)


def print_verified(jws: str, keys_for: Callable[[str], dict[str, str]], image: bytes, upload: bytes | None,
                   command: str, keys_name: str | None) -> None:
    """`histo verify` and `histo receipt verify`: the summary line, or one line saying why not."""
    try:
        print(receipts.verify_result(jws, keys_for, image, upload))
    except receipts.ReceiptError as exc:
        raise _fail(f"{command}: REJECTED: {exc}") from None
    except ValueError:
        raise _fail(f"{command}: {keys_name} is neither a PEM public key nor a JSON key map") from None


def register(sub: Any) -> None:
    def token_arg(s: argparse.ArgumentParser) -> None:
        s.add_argument("--token-file", default=str(default_path()),
                       help="the token file `histo login` wrote "
                            "(default $HISTO_TOKEN_FILE or ~/.config/histo/token.json)")

    s = sub.add_parser("login", help="sign in (OpenBao's page, PKCE) or, with --client-file, as a script")
    s.add_argument("--url", help="a master's public URL (default $HISTO_URL)")
    s.add_argument("--ca", help="the cluster's CA bundle (default $HISTO_CA)")
    s.add_argument("--no-browser", action="store_true", help="print the sign-in URL only")
    s.add_argument("--timeout", type=float, default=300.0)
    s.add_argument("--client-file", help="client credentials (JSON client_id, client_secret; mode 0600)")
    s.add_argument("--scope", default="uploader", choices=("uploader", "viewer", "admin"),
                   help="with --client-file: the role asked for")
    token_arg(s)
    s.set_defaults(fn=cmd_login)

    s = sub.add_parser("upload", help="upload an image, show progress, wait for the result")
    s.add_argument("image")
    s.add_argument("--mode", default="luma", choices=("gray", "luma", "rgb"))
    s.add_argument("--no-wait", action="store_true")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--timeout", type=float, default=300.0)
    token_arg(s)
    s.set_defaults(fn=cmd_upload)

    s = sub.add_parser("jobs", help="your jobs, newest first")
    s.add_argument("--limit", type=int, default=50, choices=range(1, 201), metavar="1..200")
    token_arg(s)
    s.set_defaults(fn=cmd_jobs)

    s = sub.add_parser("get", help="download a job's result, histogram, plot, receipt and the receipt keys")
    s.add_argument("id")
    s.add_argument("--out", help="folder to write into (default: the job id)")
    token_arg(s)
    s.set_defaults(fn=cmd_get)

    s = sub.add_parser("verify", help="check a result against its receipt, offline")
    s.add_argument("result")
    s.add_argument("receipt")
    s.add_argument("--keys", help="the receipt keys (default: receipt-keys.json beside the receipt)")
    s.add_argument("--upload", help="also check the uploaded image")
    s.set_defaults(fn=cmd_verify)

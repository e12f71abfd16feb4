"""One Firestore scenario, run with Google's official Python client
(google-cloud-firestore 2.x), printed as ONE JSON object on stdout.

Test-only. The same steps, step names and output shape as
testing/firestore-node/scenario.mjs, so the two clients can be compared.

Options (flag, or environment variable):
  --mode    SCENARIO_MODE       emulator | latchkey-grpc-tls
  --target  FIRESTORE_TARGET    host:port of the emulator or of Latchkey
  --project FIRESTORE_PROJECT   project id (default `latchkey-test`)
  --prefix  SCENARIO_PREFIX     prefix of every collection id (default: a
                                fresh one per run, so runs never collide)
            FIRESTORE_DATABASE  database id (default `(default)`)
            LATCHKEY_TOKEN      the Latchkey bearer token (latchkey-* modes)
            LATCHKEY_CA_FILE    PEM file of the CA that signed Latchkey's
                                certificate (latchkey-grpc-tls)
            SCENARIO_STEP_TIMEOUT_MS  per-step time limit (default 20000)

How each mode reaches the server, and why (read from the client's source,
google/cloud/firestore_v1/base_client.py):
  emulator           The client's documented emulator switch,
                     FIRESTORE_EMULATOR_HOST. The client then opens an
                     insecure channel and appends the metadata
                     ("authorization", "Bearer owner") to every call itself.
  latchkey-grpc-tls  The client's ordinary production path with only the
                     endpoint and the credential changed:
                     Client(credentials=google.oauth2.credentials.Credentials(
                     token), client_options={"api_endpoint": target}). It opens
                     a TLS channel with grpc.ssl_channel_credentials() and
                     adds `authorization: Bearer <token>` to every call
                     (streaming ones included) through the credentials' auth
                     plugin. grpc trusts the CA in
                     GRPC_DEFAULT_SSL_ROOTS_FILE_PATH, which this script sets
                     from LATCHKEY_CA_FILE before grpc loads. A bare token has
                     no expiry and no refresh token, so it is never refreshed.

There is deliberately no cleartext `latchkey-grpc` mode for Python: the
client's only cleartext path is the emulator one, which always sends
`Bearer owner` (a caller's credentials only reach a channel *option*, not the
call metadata), and firestore.Client takes no transport or channel argument.
Getting cleartext plus a token would mean replacing the private
`_firestore_api_internal`, i.e. no longer testing the client as shipped.

Output: {"client":"python","mode":...,"steps":[{"step","ok","result"} |
{"step","ok":false,"error":{"code","message"}}]}. Results hold no times, no
run prefix and no server-chosen ids, so runs compare equal. A failing step
does not stop the scenario. Exit 0 unless the script itself breaks.
"""

import argparse
import concurrent.futures
import datetime
import json
import os
import re
import secrets
import sys
import threading
import time
import traceback

MODES = ("emulator", "latchkey-grpc-tls")
SERVER_TIME = "<serverTimestamp>"


def log(*args):
    print("[scenario]", *args, file=sys.stderr, flush=True)


def parse_args(argv):
    env = os.environ
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", default=env.get("SCENARIO_MODE"))
    p.add_argument("--target", default=env.get("FIRESTORE_TARGET"))
    p.add_argument("--project", default=env.get("FIRESTORE_PROJECT") or "latchkey-test")
    p.add_argument("--prefix", default=env.get("SCENARIO_PREFIX"))
    opts = p.parse_args(argv)
    opts.database = env.get("FIRESTORE_DATABASE") or "(default)"
    if opts.mode not in MODES:
        p.error(f"`--mode` (or SCENARIO_MODE) must be one of {', '.join(MODES)}, not `{opts.mode}`")
    if not opts.target or not re.fullmatch(r"[^:]+:\d+", opts.target):
        p.error(f"`--target` (or FIRESTORE_TARGET) must be host:port, not `{opts.target}`")
    if not opts.prefix:
        opts.prefix = f"run{secrets.token_hex(4)}_"
    if opts.mode.startswith("latchkey") and not env.get("LATCHKEY_TOKEN"):
        p.error(f"mode `{opts.mode}` needs the Latchkey bearer token in LATCHKEY_TOKEN")
    if opts.mode.endswith("-tls") and not env.get("LATCHKEY_CA_FILE"):
        p.error(f"mode `{opts.mode}` needs the CA certificate file in LATCHKEY_CA_FILE")
    return opts


def prepare_environment(opts):
    """Environment that must be in place before grpc and the client load."""
    if opts.mode == "emulator":
        os.environ["FIRESTORE_EMULATOR_HOST"] = opts.target
    else:
        if os.environ.pop("FIRESTORE_EMULATOR_HOST", None):
            log("ignoring FIRESTORE_EMULATOR_HOST: it would replace the Latchkey endpoint and token")
    if opts.mode.endswith("-tls"):
        os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = os.environ["LATCHKEY_CA_FILE"]


def make_client(opts):
    from google.cloud import firestore

    if opts.mode == "emulator":
        return firestore.Client(project=opts.project, database=opts.database)
    import google.oauth2.credentials

    creds = google.oauth2.credentials.Credentials(os.environ["LATCHKEY_TOKEN"])
    return firestore.Client(
        project=opts.project,
        database=opts.database,
        credentials=creds,
        client_options={"api_endpoint": opts.target},
    )


# ---------------------------------------------------------------------------
# Normalization: results must not depend on time, run prefix or ordering the
# API does not promise. Mirrors scenario.mjs so the two outputs compare.


def make_normalizer(prefix, started_at):
    from google.cloud.firestore_v1.base_document import BaseDocumentReference

    def norm(v):
        if isinstance(v, str):
            return v.replace(prefix, "")
        if isinstance(v, datetime.datetime):
            # Timestamps the scenario writes are fixed and long past; anything
            # from this run's lifetime was chosen by the server.
            if v.timestamp() >= started_at - 60:
                return SERVER_TIME
            u = v.astimezone(datetime.timezone.utc)
            return {"timestamp": u.strftime("%Y-%m-%dT%H:%M:%S.") + f"{u.microsecond // 1000:03d}Z"}
        if isinstance(v, BaseDocumentReference):
            return {"ref": norm(v.path)}
        if isinstance(v, dict):
            return {k: norm(v[k]) for k in sorted(v)}
        if isinstance(v, (list, tuple)):
            return [norm(x) for x in v]
        return v

    return norm


def error_of(err):
    code = "UNKNOWN"
    message = str(err)
    grpc_code = getattr(err, "grpc_status_code", None)
    if grpc_code is not None:
        code = grpc_code.name
    elif hasattr(err, "code") and callable(err.code):  # a raw grpc.RpcError
        try:
            code = err.code().name
            message = err.details() or message
        except Exception:  # noqa: BLE001 - best effort on a foreign error type
            pass
    if getattr(err, "message", None):
        message = err.message
    return {"code": code, "message": message}


class ScenarioTimeout(Exception):
    pass


# ---------------------------------------------------------------------------
# The scenario. Step names are shared with testing/firestore-node/scenario.mjs.


def run_scenario(db, opts):
    from google.cloud import firestore
    from google.cloud.firestore_v1.base_query import FieldFilter

    norm = make_normalizer(opts.prefix, time.time())
    step_timeout = int(os.environ.get("SCENARIO_STEP_TIMEOUT_MS") or 20000) / 1000
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=4)
    steps = []

    # `@step(name)` runs the function it decorates at once, as one recorded step.
    def step(name):
        def wrap(fn):
            try:
                fut = pool.submit(fn)
                try:
                    result = fut.result(timeout=step_timeout)
                except concurrent.futures.TimeoutError:
                    raise ScenarioTimeout(
                        f"step `{name}` did not finish within {int(step_timeout * 1000)} ms"
                    ) from None
                steps.append({"step": name, "ok": True, "result": norm(result)})
            except ScenarioTimeout as e:
                log(f"step {name} failed: {e}")
                steps.append({"step": name, "ok": False, "error": {"code": "SCENARIO_TIMEOUT", "message": str(e)}})
            except Exception as e:  # noqa: BLE001 - every failure is recorded, none stops the run
                log(f"step {name} failed: {traceback.format_exc()}")
                steps.append({"step": name, "ok": False, "error": error_of(e)})
            return fn

        return wrap

    cities = db.collection(f"{opts.prefix}cities")
    landmarks_id = f"{opts.prefix}landmarks"
    sf = cities.document("sf")

    def where(q, field, op, value):
        return q.where(filter=FieldFilter(field, op, value))

    @step("set")
    def _():
        sf.set(
            {
                "name": "San Francisco",
                "state": "CA",
                "population": 860000,
                "area_km2": 121.5,
                "capital": False,
                "tags": ["west"],
                "founded": datetime.datetime(1776, 6, 29, tzinfo=datetime.timezone.utc),
                "mayor": None,
                "location": {"lat": 37.75, "lng": -122.5},
            }
        )
        return {"id": sf.id}

    @step("get")
    def _():
        s = sf.get()
        return {"exists": s.exists, "id": s.id, "data": s.to_dict()}

    @step("update_transforms")
    def _():
        sf.update(
            {
                "population": firestore.Increment(1000),
                "tags": firestore.ArrayUnion(["coast", "west"]),
                "updated_at": firestore.SERVER_TIMESTAMP,
                "capital": firestore.DELETE_FIELD,
                "location.lat": 37.77,
            }
        )
        return {"data": sf.get().to_dict()}

    @step("batch")
    def _():
        b = db.batch()
        b.set(cities.document("la"), {"name": "Los Angeles", "state": "CA", "population": 3900000, "tags": ["west"]})
        b.set(cities.document("sd"), {"name": "San Diego", "state": "CA", "population": 1400000, "tags": ["west", "coast"]})
        b.set(cities.document("nyc"), {"name": "New York", "state": "NY", "population": 8300000, "tags": ["east", "coast"]})
        b.set(cities.document("tmp"), {"name": "Temporary", "state": "XX", "population": 1})
        b.update(sf, {"nickname": "Fog City"})
        b.delete(cities.document("tmp"))
        b.set(sf.collection(landmarks_id).document("ggb"), {"name": "Golden Gate Bridge", "type": "bridge"})
        b.set(sf.collection(landmarks_id).document("alcatraz"), {"name": "Alcatraz", "type": "island"})
        b.set(cities.document("nyc").collection(landmarks_id).document("bb"), {"name": "Brooklyn Bridge", "type": "bridge"})
        b.set(sf.collection(f"{opts.prefix}neighborhoods").document("mission"), {"name": "Mission"})
        results = b.commit()
        return {"writes": len(results), "tmp_exists": cities.document("tmp").get().exists}

    @step("query")
    def _():
        q = where(where(cities, "state", "==", "CA"), "population", ">", 1000000)
        q = q.order_by("population", direction=firestore.Query.DESCENDING).limit(2)
        return [{"id": d.id, "population": d.get("population")} for d in q.get()]

    @step("query_array_contains")
    def _():
        q = where(cities, "tags", "array_contains", "coast").order_by("name")
        return [d.id for d in q.get()]

    @step("count")
    def _():
        res = where(cities, "state", "==", "CA").count(alias="count").get()
        return {"count": res[0][0].value}

    @step("transaction")
    def _():
        la = cities.document("la")

        @firestore.transactional
        def move(tx):
            a = la.get(transaction=tx)
            b = sf.get(transaction=tx)
            n = 5000
            tx.update(la, {"population": a.get("population") - n})
            tx.update(sf, {"population": b.get("population") + n})
            return n

        moved = move(db.transaction())
        return {"moved": moved, "la": la.get().get("population"), "sf": sf.get().get("population")}

    @step("collection_group")
    def _():
        q = where(db.collection_group(landmarks_id), "type", "==", "bridge")
        found = [{"path": d.reference.path, "name": d.get("name")} for d in q.get()]
        return sorted(found, key=lambda x: x["path"])

    @step("list_collections")
    def _():
        return sorted(c.id for c in sf.collections())

    @step("listen")
    def _():
        expected = ["la", "sd", "sf"]
        done = threading.Event()
        seen = {}

        def on_snapshot(docs, _changes, _read_time):
            ids = sorted(d.id for d in docs)
            if ids == expected:
                seen["ids"] = ids
                done.set()

        watch = where(cities, "state", "==", "CA").on_snapshot(on_snapshot)
        try:
            if not done.wait(step_timeout * 0.9):
                raise ScenarioTimeout(f"listen did not see {expected}")
        finally:
            watch.unsubscribe()
        return {"ids": seen["ids"]}

    @step("delete")
    def _():
        sf.delete()
        return {"exists": sf.get().exists}

    pool.shutdown(wait=False, cancel_futures=True)
    return steps


def main():
    opts = parse_args(sys.argv[1:])
    prepare_environment(opts)
    db = make_client(opts)
    steps = run_scenario(db, opts)
    out = {"client": "python", "mode": opts.mode, "steps": steps}
    sys.stdout.write(json.dumps(out, separators=(",", ":"), ensure_ascii=False) + "\n")
    sys.stdout.flush()
    try:
        db.close()
    except Exception as e:  # noqa: BLE001 - closing is best effort
        log(f"close: {e}")


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(2)
    sys.stderr.flush()
    # A timed-out step may leave a client thread blocked; do not wait for it.
    os._exit(0)

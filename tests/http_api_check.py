#!/usr/bin/env python3
"""Drive a running coalition-agent's HTTP API through a whole checkout flow with Python's
standard library only, and check every reply against partner-agent/openapi.json.

Run by it_http (which starts the broker and the agent); by hand:
  http_api_check.py --base http://127.0.0.1:8080 --spec partner-agent/openapi.json \
      --member alice --broker-pid PID
The member must be enrolled, and the partner must earn 2 points per EUR. Nothing else may
write to the ledger meanwhile: the check proves "nothing stored" by the ledger sequence.
Prints one JSON line (member, balance, last_seq, away_burn: the burn declined 91 while
the broker was stopped) for the caller to compare with the ledger; exits 1 at the first
failed check."""
import argparse
import http.client
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse

SPEC = None
SEEN = set()  # (method, path template) exercised


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


# ---- a small JSON Schema checker: the subset openapi.json uses -------------------------
def resolve(schema):
    while "$ref" in schema:
        node = SPEC
        for part in schema["$ref"][2:].split("/"):
            node = node[part]
        schema = node
    return schema


def errors(schema, v, where="$"):
    s = resolve(schema)
    if "oneOf" in s:
        ok = [sub for sub in s["oneOf"] if not errors(sub, v, where)]
        return [] if len(ok) == 1 else [f"{where}: matches {len(ok)} of oneOf"]
    t, out = s.get("type"), []
    types = {"object": dict, "string": str, "boolean": bool, "array": list}
    if t == "number":
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            return [f"{where}: {v!r} is not a number"]
        if "minimum" in s and v < s["minimum"]:
            out.append(f"{where}: {v} out of range")
    if t == "integer":
        if not isinstance(v, int) or isinstance(v, bool):
            return [f"{where}: {v!r} is not an integer"]
        if "minimum" in s and v < s["minimum"] or "maximum" in s and v > s["maximum"]:
            out.append(f"{where}: {v} out of range")
    elif t in types:
        if not isinstance(v, types[t]):
            return [f"{where}: {v!r} is not a {t}"]
    if t == "string":
        if len(v) < s.get("minLength", 0) or len(v) > s.get("maxLength", 1 << 30):
            out.append(f"{where}: length {len(v)}")
        if "pattern" in s and not re.search(s["pattern"], v):
            out.append(f"{where}: {v!r} does not match {s['pattern']}")
        if "enum" in s and v not in s["enum"]:
            out.append(f"{where}: {v!r} not in {s['enum']}")
    if t == "object":
        props = s.get("properties", {})
        out += [f"{where}: missing {k}" for k in s.get("required", []) if k not in v]
        if s.get("additionalProperties", True) is False:
            out += [f"{where}: unexpected {k}" for k in v if k not in props]
        for k, sub in props.items():
            if k in v:
                out += errors(sub, v[k], f"{where}.{k}")
    return out


def operation(method, path):
    """The spec's operation for a concrete path, and its template."""
    for template, item in SPEC["paths"].items():
        rx = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(rx, path) and method.lower() in item:
            return template, item[method.lower()]
    return None, None


# ---- HTTP ------------------------------------------------------------------------------
class Api:
    def __init__(self, base):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port

    def raw(self, method, path, body=None, headers=None, conn=None):
        c = conn or http.client.HTTPConnection(self.host, self.port, timeout=30)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        if conn is None:
            c.close()
        return r.status, r.getheader("Content-Type"), data, r

    def call(self, method, path, obj=None, key=None, body=None, headers=None, conn=None):
        h = dict(headers or {})
        if key is not None:
            h["Idempotency-Key"] = key
        if obj is not None:
            body = json.dumps(obj)
            h["Content-Type"] = "application/json"
        status, ctype, data, r = self.raw(method, path, body, h, conn)
        check(ctype == "application/json", f"{method} {path}: Content-Type {ctype}")
        reply = json.loads(data)
        template, op = operation(method, path)
        if op is not None:
            SEEN.add((method, template))
            resp = op["responses"].get(str(status))
            check(resp is not None, f"{method} {path}: status {status} not in openapi.json")
            schema = resp["content"]["application/json"]["schema"]
            errs = errors(schema, reply)
            check(not errs, f"{method} {path} {status}: reply breaks openapi.json: {errs}")
            if obj is not None and status != 400:
                req = op["requestBody"]["content"]["application/json"]["schema"]
                check(not errors(req, obj), f"{method} {path}: request breaks openapi.json")
        return status, reply, r


class Flow:
    def __init__(self, api, member, broker_pid):
        self.api, self.member, self.broker_pid = api, member, broker_pid
        self.last_seq, self.balance, self.n, self.away_burn = 0, None, 0, ""

    def txn(self, what):
        self.n += 1
        return f"http-{os.getpid()}-{what}-{self.n}"

    def post(self, kind, obj, key=None, want=200, code=None):
        status, reply, _ = self.api.call("POST", "/v1/" + kind, obj, key)
        check(status == want, f"{kind} {obj} key={key}: status {status}, wanted {want}: {reply}")
        if code is not None:
            check(reply["code"] == code, f"{kind} {obj}: code {reply['code']}, wanted {code}: {reply}")
        if status in (200, 202) and "seq" in reply and reply["seq"] > 0 and not reply["replay"]:
            check(reply["seq"] > self.last_seq, f"ledger seq went back: {reply}")
            self.last_seq = reply["seq"]
        if status == 200 and "balance" in reply and reply["code"] in ("00", "10", "51"):
            self.balance = reply["balance"]
        return reply

    def bad(self, kind, body, field, code, key=None, headers=None):
        h = dict(headers or {})
        if key is not None:
            h["Idempotency-Key"] = key
        status, reply, _ = self.api.call("POST", "/v1/" + kind, body=body, headers=h)
        check(status == 400, f"{kind} {body!r}: status {status}, wanted 400: {reply}")
        check(reply["error"]["code"] == code and reply["error"]["field"] == field,
              f"{kind} {body!r}: error {reply['error']}, wanted {code} on '{field}'")

    def earn(self, cents=1234, key=None, **kw):
        return self.post("earn", dict({"member": self.member, "amount": cents}, **kw), key)

    def nothing_stored_since(self, seq_before, what):
        """The next approved earn takes the very next ledger sequence."""
        r = self.earn(100, txn_id=self.txn("probe"))
        check(r["seq"] == seq_before + 1, f"{what}: something was stored (seq {seq_before} -> {r['seq']})")


def check_basics(f):
    status, reply, _ = f.api.call("GET", "/v1/health")
    check(status == 200 and reply["status"] == "ok" and reply["broker"] == "connected" and
          reply["outbox_requests"] == 0, f"health: {status} {reply}")
    r = f.earn(1234, key=f.txn("earn"))
    check(r["approved"] and r["points"] == 24 and not r["replay"] and r["seq"] > 0, f"earn: {r}")
    key = r["txn_id"]
    again = f.earn(1234, key=key)
    check(again["replay"] and again["seq"] == r["seq"] and again["auth_code"] == r["auth_code"]
          and again["balance"] == r["balance"], f"retry with the same key: {again}")
    body_key = f.earn(1234, txn_id=key)
    check(body_key["replay"] and body_key["seq"] == r["seq"], f"the same key in the body: {body_key}")
    both = f.post("earn", {"member": f.member, "amount": 1234, "txn_id": key}, key=key)
    check(both["replay"], f"header and body agreeing: {both}")
    other = f.post("earn", {"member": f.member, "amount": 999}, key=key, code="94")
    check(not other["approved"] and other["seq"] == 0, f"same key, other content: {other}")
    f.nothing_stored_since(f.last_seq, "a reused key with other content")


def check_concurrent_retries(f):
    """Eight tills' HTTP clients send the same key at once: one earn, one answer."""
    key, replies, lock = f.txn("race"), [], threading.Lock()
    before = f.balance

    def one():
        s, reply, _ = f.api.call("POST", "/v1/earn", {"member": f.member, "amount": 500}, key)
        with lock:
            replies.append((s, reply))
    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(all(s == 200 for s, _ in replies), f"concurrent retries: {replies}")
    seqs = {r["seq"] for _, r in replies}
    check(len(seqs) == 1 and all(r["approved"] for _, r in replies), f"one earn: {replies}")
    f.last_seq = max(f.last_seq, seqs.pop())
    status, bal, _ = f.api.call("GET", f"/v1/members/{f.member}/balance")
    check(status == 200 and bal["balance"] == before + 10, f"balance after the race: {bal}, before {before}")
    f.balance = bal["balance"]


def check_bad_requests(f):
    seq, used = f.last_seq, f.txn("bad")
    m = f.member
    f.bad("earn", '{"member":', "", "invalid_json", key=used)
    f.bad("earn", "[1,2]", "", "invalid_json", key=used)
    f.bad("earn", "", "", "invalid_json", key=used)
    f.bad("earn", json.dumps({"member": m, "amount": "12.34"}), "amount", "invalid_type", key=used)
    f.bad("earn", json.dumps({"member": m, "amount": 12.5}), "amount", "invalid_type", key=used)
    f.bad("earn", '{"member":"%s","amount":1e3}' % m, "amount", "invalid_type", key=used)
    f.bad("earn", json.dumps({"member": m, "amount": 0}), "amount", "invalid_field", key=used)
    f.bad("earn", json.dumps({"member": m, "amount": -5}), "amount", "invalid_field", key=used)
    f.bad("earn", json.dumps({"member": m, "amount": 10**13}), "amount", "invalid_field", key=used)
    f.bad("earn", '{"member":"%s","amount":99999999999999999999}' % m, "", "invalid_json", key=used)
    f.bad("earn", json.dumps({"member": m, "ammount": 5}), "", "unknown_field", key=used)
    f.bad("earn", json.dumps({"member": m, "amount": 5, "points": 5}), "points", "unknown_field", key=used)
    f.bad("earn", json.dumps({"member": m, "amount": 5}), "txn_id", "missing_field")
    f.bad("earn", json.dumps({"txn_id": used, "amount": 5}), "member", "missing_field")
    f.bad("earn", json.dumps({"member": m, "txn_id": used}), "amount", "missing_field")
    f.bad("earn", json.dumps({"member": m, "card": "4111111111111111", "amount": 5}), "card",
          "invalid_field", key=used)
    f.bad("earn", json.dumps({"member": "two words", "amount": 5}), "member", "invalid_field", key=used)
    f.bad("earn", json.dumps({"member": "~u123", "amount": 5}), "member", "invalid_field", key=used)
    f.bad("earn", json.dumps({"member": "m" * 65, "amount": 5}), "member", "invalid_field", key=used)
    f.bad("earn", json.dumps({"member": 42, "amount": 5}), "member", "invalid_type", key=used)
    f.bad("earn", json.dumps({"card": "4111111111111112", "amount": 5}), "card", "invalid_field", key=used)
    f.bad("earn", json.dumps({"member": m, "amount": 5, "currency": "XYZ"}), "currency",
          "invalid_field", key=used)
    f.bad("earn", '{"member":"%s","member":"x","amount":5}' % m, "", "invalid_json", key=used)
    f.bad("earn", '{"member":"a\\u0000b","amount":5}', "", "invalid_json", key=used)
    f.bad("earn", b'{"member":"\xff\xfe","amount":5}', "", "invalid_json", key=used)
    f.bad("earn", json.dumps({"member": m, "amount": 5, "txn_id": used + "x"}), "txn_id",
          "invalid_field", key=used)
    f.bad("earn", json.dumps({"member": m, "amount": 5}), "Idempotency-Key", "invalid_field", key="~agent")
    f.bad("earn", json.dumps({"member": m, "amount": 5}), "Idempotency-Key", "invalid_field", key="a b")
    f.bad("earn", json.dumps({"member": m, "amount": 5}), "Idempotency-Key", "invalid_field", key="k" * 65)
    f.bad("burn", json.dumps({"member": m, "points": 5, "allow_partial": "yes"}), "allow_partial",
          "invalid_type", key=used)
    f.bad("refund", json.dumps({"original_txn_id": "x", "amount": 5, "points": 5}), "points",
          "invalid_field", key=used)
    f.bad("void", json.dumps({"txn_id": used}), "original_txn_id", "missing_field")
    f.bad("enroll", json.dumps({"txn_id": used}), "member", "missing_field")
    # A card number in a body that is no JSON is not echoed back in the error.
    pan = "6011000990139424"
    for body in ('{"card":"%s' % pan, pan, '{"card":%s000}' % pan, '{"card":"%s"x}' % pan):
        status, reply, _ = f.api.call("POST", "/v1/earn", body=body, headers={"Idempotency-Key": used})
        check(status == 400 and pan not in json.dumps(reply), f"{body!r}: {status} {reply}")
    # Two Idempotency-Key headers: which one is the request's? Refused, on POST and GET.
    for method, path, payload in (("POST", "/v1/earn", json.dumps({"member": m, "amount": 5})),
                                  ("GET", f"/v1/members/{m}/balance", None)):
        c = http.client.HTTPConnection(f.api.host, f.api.port, timeout=30)
        c.putrequest(method, path)
        c.putheader("Idempotency-Key", used)
        c.putheader("Idempotency-Key", used + "-other")
        data = payload.encode() if payload is not None else None
        if data is not None:
            c.putheader("Content-Length", str(len(data)))
        c.endheaders(data)
        r = c.getresponse()
        reply = json.loads(r.read())
        c.close()
        check(r.status == 400 and reply["error"]["field"] == "Idempotency-Key",
              f"{method} {path} with two keys: {r.status} {reply}")
    # Clients that hang up mid-request: nothing stored (libmicrohttpd's complaint about
    # each goes to the agent's log as one of its lines, which it_http checks).
    for _ in range(3):
        s = socket.create_connection((f.api.host, f.api.port), timeout=30)
        s.sendall(b"POST /v1/earn HTTP/1.1\r\nHost: x\r\nIdempotency-Key: " + used.encode() +
                  b"\r\nContent-Length: 100\r\n\r\n{\"mem")
        s.close()
    big = json.dumps({"member": m, "amount": 5, "pad": "x" * 9000})
    f.bad("earn", big, "", "body_too_large", key=used)
    # The same, chunked: no Content-Length to refuse it by, cut off as it arrives.
    c = http.client.HTTPConnection(f.api.host, f.api.port, timeout=30)
    c.putrequest("POST", "/v1/earn")
    c.putheader("Transfer-Encoding", "chunked")
    c.putheader("Idempotency-Key", used)
    c.endheaders()
    for _ in range(20):
        c.send(b"400\r\n" + b" " * 0x400 + b"\r\n")
    c.send(b"0\r\n\r\n")
    r = c.getresponse()
    reply = json.loads(r.read())
    check(r.status == 400 and reply["error"]["code"] == "body_too_large", f"chunked: {r.status} {reply}")
    c.close()
    for method, path, want in (("GET", "/v1/earn", 405), ("POST", "/v1/health", 405),
                               ("DELETE", f"/v1/members/{m}/balance", 405),
                               ("POST", "/v1/nothing", 404), ("GET", "/v2/earn", 404),
                               ("GET", "/", 404), ("GET", "/v1/members/~u1/balance", 400),
                               ("GET", "/v1/members/" + "m" * 70 + "/balance", 400)):
        status, reply, r = f.api.call(method, path)
        check(status == want and "error" in reply, f"{method} {path}: {status} {reply}")
        if want == 405:
            check(r.getheader("Allow") in ("GET", "POST"), f"{method} {path}: Allow {r.getheader('Allow')}")
    check(f.last_seq == seq, "a bad request took a ledger sequence")
    # Nothing was stored, and the key of the bad requests was never taken: it is fresh now.
    fresh = f.earn(1234, key=used)
    check(fresh["approved"] and not fresh["replay"] and fresh["seq"] == seq + 1,
          f"after the bad requests: {fresh}")


def check_checkout(f):
    burn = f.post("burn", {"member": f.member, "points": 10}, key=f.txn("burn"), code="00")
    check(burn["points"] == 10, f"burn: {burn}")
    declined = f.post("burn", {"member": f.member, "points": 100000}, key=f.txn("burn"), code="51")
    check(not declined["approved"] and declined["seq"] == 0 and
          declined["available"] == declined["balance"] > 0 and declined["pending_points"] == 0,
          f"burn over the balance: {declined}")
    part = f.post("burn", {"member": f.member, "points": 100000, "allow_partial": True},
                  key=f.txn("burn"), code="10")
    check(part["balance"] == 0, f"partial burn: {part}")
    earn = f.earn(5000, key=f.txn("earn"))
    check(earn["points"] == 100, f"earn 50.00: {earn}")
    refund = f.post("refund", {"original_txn_id": earn["txn_id"], "amount": 2500},
                    key=f.txn("refund"), code="00")
    check(refund["points"] == 50 and refund["balance"] == earn["balance"] - 50, f"refund: {refund}")
    burn = f.post("burn", {"member": f.member, "points": 20}, key=f.txn("burn"), code="00")
    void = f.post("void", {"original_txn_id": burn["txn_id"]}, key=f.txn("void"), code="00")
    check(void["balance"] == burn["balance"] + 20, f"void: {void}")
    again = f.post("burn", {"member": f.member, "points": 20}, key=burn["txn_id"])
    check(again["replay"] and again["reversed"] and not again["approved"], f"replay of a voided burn: {again}")
    rest = f.post("refund", {"original_txn_id": earn["txn_id"]}, key=f.txn("refund"), code="00")
    check(rest["points"] == 50, f"refund of the rest: {rest}")
    # A void that overtakes its original is recorded first; the original is then refused.
    late = f.txn("late")
    ahead = f.post("void", {"original_txn_id": late}, key=f.txn("void"), code="00")
    check(ahead["points"] == 0, f"void before its original: {ahead}")
    refused = f.earn(1234, key=late)
    check(not refused["approved"] and refused["seq"] == 0, f"an original after its void: {refused}")
    enrolled = f.post("enroll", {"member": f.member}, key=f.txn("enroll"))
    check(not enrolled["approved"], f"enrol an enrolled member: {enrolled}")
    newbie = f.member + "-new"
    fresh = f.post("enroll", {"member": newbie}, key=f.txn("enroll"), code="00")
    status, bal, _ = f.api.call("GET", f"/v1/members/{newbie}/balance", key=f.txn("bal"))
    check(status == 200 and bal["code"] == "00" and bal["balance"] == 0, f"new member: {fresh} {bal}")
    status, bal, _ = f.api.call("GET", "/v1/members/nobody-at-all/balance")
    check(status == 200 and bal["code"] == "14", f"unknown member: {status} {bal}")
    status, bal, _ = f.api.call("GET", f"/v1/members/{f.member}/balance")
    check(status == 200 and bal["balance"] == f.balance, f"balance {bal} vs replies {f.balance}")


def check_keep_alive(f):
    c = http.client.HTTPConnection(f.api.host, f.api.port, timeout=30)
    for _ in range(5):
        status, reply, _ = f.api.call("GET", f"/v1/members/{f.member}/balance", conn=c)
        check(status == 200 and reply["balance"] == f.balance, f"keep-alive: {reply}")
    c.close()


def check_offline(f):
    if f.broker_pid is None:
        return
    os.kill(f.broker_pid, signal.SIGSTOP)
    try:
        key = f.txn("offline")
        stored = f.post("earn", {"member": f.member, "amount": 1000}, key=key, want=202)
        check(stored["offline"] and stored["seq"] == 0, f"offline earn: {stored}")
        deadline = time.time() + 10
        while True:  # the agent's loop reports its outbox once a turn
            status, health, _ = f.api.call("GET", "/v1/health")
            if health["outbox_requests"] >= 1 or time.time() > deadline:
                break
            time.sleep(0.05)
        check(status == 200 and health["outbox_requests"] >= 1, f"health while away: {health}")
        f.away_burn = f.txn("burn")
        burn = f.post("burn", {"member": f.member, "points": 1}, key=f.away_burn, want=503, code="91")
        check(not burn["approved"], f"burn while away: {burn}")
        status, bal, r = f.api.call("GET", f"/v1/members/{f.member}/balance")
        check(status == 503 and bal["code"] == "91" and r.getheader("Retry-After") == "1",
              f"balance while away: {status} {bal}")
    finally:
        os.kill(f.broker_pid, signal.SIGCONT)
    deadline = time.time() + 30
    while True:
        s, r, _ = f.api.call("POST", "/v1/earn", {"member": f.member, "amount": 1000}, key)
        if s == 200:
            break
        check(s == 202 and time.time() < deadline, f"the stored earn never went through: {s} {r}")
        time.sleep(0.2)
    check(r["approved"] and r["seq"] > f.last_seq and r["points"] == 20, f"stored earn delivered: {r}")
    deadline = time.time() + 10
    while True:
        status, health, _ = f.api.call("GET", "/v1/health")
        if health["outbox_requests"] == 0 or time.time() > deadline:
            break
        time.sleep(0.05)
    check(health["outbox_requests"] == 0 and health["oldest_pending_seconds"] == 0 and
          health["broker"] == "connected", f"health after delivery: {health}")
    f.last_seq = r["seq"]
    # The burn told 91 (503) applied nothing, and its key is spent: the same key again is
    # declined 12, as openapi.json says; a new key is a new burn.
    again = f.post("burn", {"member": f.member, "points": 1}, key=f.away_burn, want=200, code="12")
    check(not again["approved"] and again["seq"] == 0, f"the away burn's key again: {again}")
    status, bal, _ = f.api.call("GET", f"/v1/members/{f.member}/balance")
    check(status == 200, f"balance: {bal}")
    f.balance = bal["balance"]


def main():
    global SPEC
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True)
    p.add_argument("--spec", required=True)
    p.add_argument("--member", required=True)
    p.add_argument("--broker-pid", type=int)
    p.add_argument("--pos-json", help="coalition-pos --json's answer to a balance inquiry "
                   "of the member: the API's replies must have the same fields and types")
    a = p.parse_args()
    SPEC = json.load(open(a.spec))
    f = Flow(Api(a.base), a.member, a.broker_pid)
    check_basics(f)
    if a.pos_json:
        pos = json.loads(a.pos_json)
        status, api, _ = f.api.call("GET", f"/v1/members/{a.member}/balance")
        check(status == 200, f"balance: {status} {api}")
        check([(k, type(v)) for k, v in pos.items()] == [(k, type(v)) for k, v in api.items()],
              f"fields differ from coalition-pos --json:\n  pos  {pos}\n  http {api}")
    check_concurrent_retries(f)
    check_bad_requests(f)
    check_checkout(f)
    check_keep_alive(f)
    check_offline(f)
    ops = {(m.upper(), t) for t, item in SPEC["paths"].items() for m in item}
    check(ops <= SEEN, f"operations in openapi.json never exercised: {sorted(ops - SEEN)}")
    print(json.dumps({"member": f.member, "balance": f.balance, "last_seq": f.last_seq,
                      "away_burn": f.away_burn}, separators=(",", ":")))


if __name__ == "__main__":
    main()

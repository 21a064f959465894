"""Alerts: webhook JSON received by a local HTTP server, e-mail by a local aiosmtpd server
(plain and STARTTLS), and a failing notifier that never fails the caller."""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from ansible_collections.lifeboat.dr.plugins.module_utils.ops import alerts

REPORT = {"status": "critical", "store": "/srv/lifeboat", "generated_at": "2025-01-29T02:00:00.000000Z",
          "problems": [{"level": "critical", "component": "mysql", "message": "the last backup job failed"}],
          "disaster_now": {"rto_s": 420.0, "rpo_s": 900.0}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def webhook():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "type": self.headers["Content-Type"], "json": json.loads(body)})
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            return

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/T000/SECRET", received
    server.shutdown()
    server.server_close()


class Sink:
    def __init__(self) -> None:
        self.messages: list[dict] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd API
        self.messages.append({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                              "data": envelope.content.decode("utf-8", "replace"), "tls": session.ssl is not None})
        return "250 OK"


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address(
                "127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture()
def smtp_server():
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, sink
    controller.stop()


def test_webhook_gets_slack_compatible_json(webhook):
    url, received = webhook
    results = alerts.notify(REPORT, alerts.AlertConfig(webhooks=[url]))
    assert results == [{"channel": "webhook", "target": f"http://127.0.0.1:{url.split(':')[2].split('/')[0]}/...",
                        "ok": True, "error": None}]
    (got,) = received
    assert got["type"] == "application/json" and got["path"] == "/hooks/T000/SECRET"
    assert got["json"]["status"] == "critical"
    assert "CRITICAL" in got["json"]["text"] and "the last backup job failed" in got["json"]["text"]
    assert "RTO 7m 0s" in got["json"]["text"]


def test_email_is_delivered_over_plain_smtp_when_starttls_is_not_offered(smtp_server):
    controller, sink = smtp_server
    cfg = alerts.EmailConfig(host="127.0.0.1", port=controller.port, sender="lb@example.org",
                             recipients=["ops@example.org"])
    results = alerts.notify(REPORT, alerts.AlertConfig(email=cfg))
    assert results[0]["ok"], results
    (msg,) = sink.messages
    assert msg["to"] == ["ops@example.org"] and "Subject: [lifeboat] CRITICAL" in msg["data"]
    assert "the last backup job failed" in msg["data"] and msg["tls"] is False


def test_email_uses_starttls_when_offered(tmp_path: Path):
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port(), tls_context=context)
    controller.start()
    try:
        cfg = alerts.EmailConfig(host="127.0.0.1", port=controller.port, recipients=["ops@example.org"],
                                 starttls="always", ca_file=str(cert))
        results = alerts.notify(REPORT, alerts.AlertConfig(email=cfg))
    finally:
        controller.stop()
    assert results[0]["ok"], results
    assert sink.messages[0]["tls"] is True


def test_a_failing_notifier_is_reported_never_raised(webhook, smtp_server):
    url, received = webhook
    controller, sink = smtp_server
    dead = f"http://127.0.0.1:{free_port()}/hook"
    cfg = alerts.AlertConfig(webhooks=[dead, url],
                             email=alerts.EmailConfig(host="127.0.0.1", port=controller.port, recipients=["a@b.c"],
                                                      starttls="always"))
    results = alerts.notify(REPORT, cfg)
    assert [r["ok"] for r in results] == [False, True, False]
    assert "does not offer STARTTLS" in results[2]["error"]
    assert len(received) == 1 and sink.messages == []


def test_below_min_level_nothing_is_sent(webhook):
    url, received = webhook
    only_critical = alerts.AlertConfig(webhooks=[url], min_level="critical")
    assert alerts.notify({**REPORT, "status": "warning"}, only_critical) == []
    assert alerts.notify({**REPORT, "status": "ok", "problems": []}, alerts.AlertConfig(webhooks=[url])) == []
    assert received == []


def test_config_from_options_validates():
    cfg = alerts.config_from_options({"webhooks": ["http://127.0.0.1/x"], "email": {"host": "h", "recipients": ["a"]}})
    assert cfg.email.port == 25 and cfg.email.starttls == "auto"
    with pytest.raises(alerts.ConfigError):
        alerts.config_from_options({"email": {"host": "h", "starttls": "sometimes"}})
    assert "secret" not in repr(alerts.EmailConfig(host="h", password="secret"))

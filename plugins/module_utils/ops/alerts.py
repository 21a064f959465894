# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Alerts: tell people when health crosses a threshold, by webhook and e-mail.

* Webhook: an HTTP(S) POST of JSON with a ``text`` field (what Slack incoming
  webhooks and Teams connectors display) plus ``status``, ``problems``, ``store``.
* E-mail: SMTP (``smtplib``); STARTTLS is used whenever the server offers it
  (``starttls="auto"``), required with ``"always"``, skipped with ``"never"``; login
  only when a user is given. The password is never logged.

:func:`notify` never raises: a failing notifier is logged and reported in the result
(``{"channel", "target", "ok", "error"}``), so alerting can never fail the operation
it reports on.
"""

from __future__ import annotations

import json
import smtplib
import socket
import ssl
import urllib.error
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Optional
from urllib.parse import urlsplit

from ansible.module_utils.urls import open_url

from ansible_collections.lifeboat.dr.plugins.module_utils.util.errors import ConfigError
from ansible_collections.lifeboat.dr.plugins.module_utils.util.progress import get_logger

log = get_logger("alerts")

LEVELS = {"ok": 0, "warning": 1, "critical": 2}


@dataclass
class EmailConfig:
    """How to send alert e-mail. ``password`` is a secret: never logged or returned."""

    host: str
    port: int = 25
    sender: str = "lifeboat@localhost"
    recipients: list[str] = field(default_factory=list)
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    starttls: str = "auto"
    ca_file: Optional[str] = None
    validate_certs: bool = True
    timeout_s: float = 15.0


@dataclass
class AlertConfig:
    """Where alerts go and from which status on (``min_level``: ``warning`` or ``critical``)."""

    webhooks: list[str] = field(default_factory=list)
    email: Optional[EmailConfig] = None
    min_level: str = "warning"
    timeout_s: float = 10.0


def _redact_url(url: str) -> str:
    """Scheme, host and port only: webhook paths often embed a secret token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}/..."


def message_text(report: dict[str, Any]) -> str:
    """A short human message for a health report."""
    lines = [f"Lifeboat health {report['status'].upper()} for store {report.get('store')}"]
    for problem in report.get("problems", []):
        lines.append(f"- {problem['level']}: {problem['component']}: {problem['message']}")
    disaster = report.get("disaster_now") or {}
    if disaster:
        from ansible_collections.lifeboat.dr.plugins.module_utils.ops.health import format_seconds
        lines.append(f"If disaster struck now: RTO {format_seconds(disaster.get('rto_s'))}, "
                     f"worst-case RPO {format_seconds(disaster.get('rpo_s'))}")
    return "\n".join(lines)


def send_webhook(url: str, payload: dict[str, Any], timeout_s: float = 10.0) -> None:
    """POST ``payload`` as JSON to ``url`` (http/https only); raises on a non-2xx answer."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise ConfigError(f"webhook URL {_redact_url(url)} is not http(s)", hint="use an http:// or https:// URL")
    data = json.dumps(payload).encode("utf-8")
    response = open_url(url, data=data, method="POST", timeout=timeout_s, http_agent="lifeboat",
                        headers={"Content-Type": "application/json"})
    try:
        status = response.getcode()
        if not 200 <= status < 300:
            raise OSError(f"webhook answered HTTP {status}")
    finally:
        response.close()


def send_email(cfg: EmailConfig, subject: str, body: str) -> None:
    """Send one plain-text e-mail; STARTTLS per ``cfg.starttls``; raises on failure."""
    if not cfg.recipients:
        raise ConfigError("alert e-mail has no recipients", hint="set at least one recipient")
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = cfg.sender
    msg["To"] = ", ".join(cfg.recipients)
    msg.set_content(body)
    with smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_s) as smtp:
        smtp.ehlo()
        offered = smtp.has_extn("starttls")
        if cfg.starttls == "always" and not offered:
            raise ConfigError(f"SMTP server {cfg.host}:{cfg.port} does not offer STARTTLS",
                              hint="use starttls=auto to allow plain SMTP, or fix the server")
        if offered and cfg.starttls != "never":
            context = ssl.create_default_context(cafile=cfg.ca_file)
            if not cfg.validate_certs:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            smtp.starttls(context=context)
            smtp.ehlo()
        if cfg.username:
            smtp.login(cfg.username, cfg.password or "")
        smtp.send_message(msg)


def should_alert(status: str, min_level: str) -> bool:
    """True when ``status`` is at least ``min_level`` (``ok`` < ``warning`` < ``critical``)."""
    return LEVELS.get(status, 2) >= LEVELS.get(min_level, 1)


def notify(report: dict[str, Any], config: AlertConfig, *, force: bool = False) -> list[dict[str, Any]]:
    """Send the report's status to every configured channel when it reaches ``min_level``
    (or always with ``force``). Never raises; returns one result per channel."""
    if not force and not should_alert(report["status"], config.min_level):
        return []
    text = message_text(report)
    results = []
    payload = {"text": text, "status": report["status"], "store": report.get("store"),
               "problems": report.get("problems", []), "generated_at": report.get("generated_at")}
    for url in config.webhooks:
        results.append(_attempt("webhook", _redact_url(url), lambda u=url: send_webhook(u, payload, config.timeout_s)))
    if config.email is not None:
        subject = f"[lifeboat] {report['status'].upper()} {socket.gethostname()}"
        results.append(_attempt("email", f"{config.email.host}:{config.email.port}",
                                lambda: send_email(config.email, subject, text)))
    return results


def _attempt(channel: str, target: str, send: Any) -> dict[str, Any]:
    try:
        send()
    except (OSError, smtplib.SMTPException, ConfigError, ssl.SSLError, urllib.error.URLError, ValueError) as err:
        log.warning("alert via %s to %s failed: %s: %s", channel, target, type(err).__name__, err)
        return {"channel": channel, "target": target, "ok": False, "error": f"{type(err).__name__}: {err}"}
    log.info("alert sent via %s to %s", channel, target)
    return {"channel": channel, "target": target, "ok": True, "error": None}


def config_from_options(options: dict[str, Any]) -> AlertConfig:
    """An :class:`AlertConfig` from module/playbook options: ``webhooks`` (list of URLs),
    ``email`` (dict: host, port, sender, recipients, username, password, starttls, ca_file,
    validate_certs), ``min_level``."""
    email = options.get("email")
    email_cfg = None
    if email:
        if not email.get("host"):
            raise ConfigError("alert e-mail needs a host", hint="set email.host (SMTP server)")
        email_cfg = EmailConfig(host=email["host"], port=int(email.get("port") or 25),
                                sender=email.get("sender") or "lifeboat@localhost",
                                recipients=list(email.get("recipients") or []), username=email.get("username"),
                                password=email.get("password"), starttls=email.get("starttls") or "auto",
                                ca_file=email.get("ca_file"), validate_certs=email.get("validate_certs", True))
        if email_cfg.starttls not in ("auto", "always", "never"):
            raise ConfigError(f"email.starttls must be auto, always or never, not {email_cfg.starttls!r}")
    min_level = options.get("min_level") or "warning"
    if min_level not in ("warning", "critical"):
        raise ConfigError(f"alert min_level must be warning or critical, not {min_level!r}")
    return AlertConfig(webhooks=list(options.get("webhooks") or []), email=email_cfg, min_level=min_level)

"""E-mail notifications: a client's delivery is ready, a share link is opened for the first time,
an upload's job failed. Sent by SMTP from a background thread once the catalogue commits.

Callers only say what happened, inside the unit of work that made it happen
(`delivery_ready(session, dataset_id)`); the messages wait on the session and leave when it
commits (a rolled-back request sends nothing), so sending never blocks or fails a request.
With no SMTP host configured (the default) nothing is sent at all. Messages carry no secrets:
no passwords, tokens or share-link passwords; a share link's address only goes to recipients
the manager names for a delivery.
"""

from __future__ import annotations

import html
import logging
import smtplib
import ssl
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from sqlalchemy import event, or_, select
from sqlalchemy.orm import Session

from allmicro_data.catalogue.models import (
    Dataset,
    File,
    Job,
    Project,
    ProjectMembership,
    ShareLink,
    User,
)
from allmicro_data.settings import Settings

log = logging.getLogger(__name__)

LANGUAGES = ("en", "it", "sl")
PENDING = "allmicro_notifications"


@dataclass(frozen=True)
class MailServer:
    """Where and how messages leave: an SMTP submission server."""

    host: str
    port: int
    security: str  # "starttls", "ssl" or "none"
    user: str | None
    password: str | None
    sender: str
    timeout: float
    public_url: str | None

    @classmethod
    def from_settings(cls, settings: Settings) -> MailServer | None:
        if not settings.smtp_host:
            return None
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            security=settings.smtp_security,
            user=settings.smtp_user,
            password=(
                settings.smtp_password.get_secret_value()
                if settings.smtp_password is not None
                else None
            ),
            sender=settings.mail_from,
            timeout=settings.smtp_timeout_seconds,
            public_url=settings.public_url.rstrip("/") if settings.public_url else None,
        )


@dataclass(frozen=True)
class Notice:
    """One message to one person, in their language."""

    kind: str  # "delivery_ready", "share_first_use", "job_failed": for the log
    recipient: str
    subject: str
    text: str
    html: str


_server: MailServer | None = None
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def configure(settings: Settings) -> None:
    """Use these settings' SMTP server in this process (called with the process's services)."""
    global _server
    _server = MailServer.from_settings(settings)


def enabled() -> bool:
    return _server is not None


# ------------------------------------------------------------------ the three events


def delivery_ready(
    session: Session,
    dataset_id: str,
    *,
    recipients: Sequence[str] = (),
    link_url: str | None = None,
    language: str | None = None,
) -> int:
    """Tell the client that a dataset was delivered to them; returns how many messages wait.

    Goes to every active user of the project's client organisation who belongs to the project
    (as a person or through the organisation's membership), each in their own language, with
    the dataset's address on this server; and to each address in `recipients` (contacts
    without an account, named by the manager), in `language`, with `link_url` (the share
    link made for them) when given. Call it in the session that marks the delivery: the
    messages leave after that session commits, and none if it rolls back.
    """
    server = _server
    if server is None:
        return 0
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        return 0
    project = session.get(Project, dataset.project_id)
    if project is None:
        return 0
    files = session.scalars(select(File.size).where(File.dataset_id == dataset.id)).all()
    facts = {
        "project": project.name,
        "dataset": dataset.name,
        "files": len(files),
        "facility": server.sender,
    }
    notices: list[Notice] = []
    seen: set[str] = set()
    if project.client_organisation_id is not None:
        member_users = select(ProjectMembership.user_id).where(
            ProjectMembership.project_id == project.id, ProjectMembership.user_id.is_not(None)
        )
        member_orgs = select(ProjectMembership.organisation_id).where(
            ProjectMembership.project_id == project.id,
            ProjectMembership.organisation_id.is_not(None),
        )
        clients = session.scalars(
            select(User)
            .where(
                User.organisation_id == project.client_organisation_id,
                User.is_active.is_(True),
                or_(User.id.in_(member_users), User.organisation_id.in_(member_orgs)),
            )
            .order_by(User.email)
        ).all()
        for user in clients:
            seen.add(user.email.lower())
            url = _page(server, f"/datasets/{dataset.id}")
            notices.append(
                _compose("delivery_ready", user.email, _language_of(user), {**facts, "url": url})
            )
    for address in recipients:
        address = address.strip()
        if not address or address.lower() in seen:
            continue
        seen.add(address.lower())
        notices.append(
            _compose("delivery_ready", address, language, {**facts, "url": link_url or ""})
        )
    _send_after_commit(session, notices)
    return len(notices)


def share_link_first_used(session: Session, link: ShareLink) -> None:
    """Tell a link's creator that it was opened for the first time (call after counting the
    use; later uses send nothing)."""
    server = _server
    if server is None or link.use_count != 1 or link.created_by_id is None:
        return
    creator = session.get(User, link.created_by_id)
    if creator is None or not creator.is_active:
        return
    if link.dataset_id is not None:
        dataset = session.get(Dataset, link.dataset_id)
        shared = dataset.name if dataset is not None else ""
        page = f"/datasets/{link.dataset_id}"
    else:
        project = session.get(Project, link.project_id)
        shared = project.name if project is not None else ""
        page = f"/projects/{link.project_id}"
    facts = {
        "label": link.label or shared,
        "shared": shared,
        "at": (link.last_used_at.strftime("%Y-%m-%d %H:%M UTC") if link.last_used_at else ""),
        "url": _page(server, page),
    }
    notice = _compose("share_first_use", creator.email, _language_of(creator), facts)
    _send_after_commit(session, [notice])


def upload_job_failed(session: Session, job: Job) -> None:
    """Tell the contributor who uploaded a job's file that its job failed for good (call where
    the job is marked failed, in the same session)."""
    server = _server
    if server is None or job.file_id is None:
        return
    file = session.get(File, job.file_id)
    if file is None or file.uploaded_by_id is None:
        return
    uploader = session.get(User, file.uploaded_by_id)
    if uploader is None or not uploader.is_active:
        return
    dataset = session.get(Dataset, file.dataset_id)
    facts = {
        "file": file.original_name,
        "dataset": dataset.name if dataset is not None else "",
        "error": job.error or "",
        "url": _page(server, f"/datasets/{file.dataset_id}"),
    }
    notice = _compose("job_failed", uploader.email, _language_of(uploader), facts)
    _send_after_commit(session, [notice])


# ------------------------------------------------------------------ texts

# Subject, opening line and the closing line with the address, per kind and language. Kept
# here rather than in the web UI's catalogues: the core (job processes included) sends them.
TEXTS: dict[str, dict[str, tuple[str, str, str]]] = {
    "delivery_ready": {
        "en": (
            "Results ready: {dataset}",
            "The results of {project} are ready for you: the dataset {dataset}, "
            "with {files} files.",
            "Open them here:",
        ),
        "it": (
            "Risultati pronti: {dataset}",
            "I risultati di {project} sono pronti per voi: il dataset {dataset}, con {files} file.",
            "Apriteli qui:",
        ),
        "sl": (
            "Rezultati so pripravljeni: {dataset}",
            "Rezultati projekta {project} so pripravljeni za vas: nabor podatkov {dataset}, "
            "število datotek: {files}.",
            "Odprite jih tukaj:",
        ),
    },
    "share_first_use": {
        "en": (
            "Your share link was opened: {label}",
            "Your share link for {shared} was opened for the first time ({at}).",
            "Manage your links here:",
        ),
        "it": (
            "Il tuo link di condivisione è stato aperto: {label}",
            "Il tuo link di condivisione per {shared} è stato aperto per la prima volta ({at}).",
            "Gestisci i tuoi link qui:",
        ),
        "sl": (
            "Vaša povezava za deljenje je bila odprta: {label}",
            "Vaša povezava za deljenje za {shared} je bila prvič odprta ({at}).",
            "Povezave upravljate tukaj:",
        ),
    },
    "job_failed": {
        "en": (
            "Processing failed: {file}",
            "Your upload {file} in the dataset {dataset} could not be processed: {error}",
            "The original is stored; see the dataset here:",
        ),
        "it": (
            "Elaborazione non riuscita: {file}",
            "Il tuo caricamento {file} nel dataset {dataset} non è stato elaborato: {error}",
            "L'originale è conservato; vedi il dataset qui:",
        ),
        "sl": (
            "Obdelava ni uspela: {file}",
            "Vašega naloženega {file} v naboru podatkov {dataset} ni bilo mogoče obdelati: {error}",
            "Izvirnik je shranjen; nabor podatkov si oglejte tukaj:",
        ),
    },
}


def _language_of(user: User) -> str | None:
    """The language the user last signed in to the web pages with, if ever."""
    return user.language


def _page(server: MailServer, path: str) -> str:
    return f"{server.public_url}{path}" if server.public_url else ""


def _compose(kind: str, recipient: str, language: str | None, facts: dict[str, Any]) -> Notice:
    texts = TEXTS[kind]
    subject, opening, closing = texts[language if language in texts else "en"]
    url = str(facts.get("url") or "")
    text_lines = [opening.format(**facts)]
    html_parts = [f"<p>{html.escape(opening.format(**facts))}</p>"]
    if url:
        text_lines += ["", closing, url]
        link = html.escape(url, quote=True)
        html_parts.append(f'<p>{html.escape(closing)} <a href="{link}">{link}</a></p>')
    text_lines += ["", "-- ", "AllMicro Data"]
    body_html = (
        f'<!DOCTYPE html><html lang="{html.escape(language or "en")}"><body>'
        + "".join(html_parts)
        + "<p>AllMicro Data</p></body></html>"
    )
    # Subjects are one line whatever a name holds.
    one_line = " ".join(subject.format(**facts).split())
    return Notice(kind, recipient, one_line, "\n".join(text_lines) + "\n", body_html)


# ------------------------------------------------------------------ sending


def _send_after_commit(session: Session, notices: list[Notice]) -> None:
    if not notices:
        return
    pending: list[Notice] = session.info.setdefault(PENDING, [])
    if not pending and not session.info.get(PENDING + ".listening"):
        session.info[PENDING + ".listening"] = True
        event.listen(session, "after_commit", _on_commit)
        event.listen(session, "after_rollback", _on_rollback)
    pending.extend(notices)


def _on_commit(session: Session) -> None:
    notices: list[Notice] = session.info.pop(PENDING, [])
    if notices:
        send_in_background(notices)


def _on_rollback(session: Session) -> None:
    session.info.pop(PENDING, None)


def send_in_background(notices: Sequence[Notice]) -> None:
    """Hand messages to this process's mail thread (one, so an SMTP server is not flooded)."""
    global _executor
    server = _server
    if server is None:
        return
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mail")
        executor = _executor
    for notice in notices:
        executor.submit(_deliver, server, notice)


def _message(server: MailServer, notice: Notice) -> EmailMessage:
    message = EmailMessage()
    message["From"] = server.sender
    message["To"] = notice.recipient
    message["Subject"] = notice.subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=server.host)
    message["Auto-Submitted"] = "auto-generated"
    message["X-AllMicro-Notification"] = notice.kind
    message.set_content(notice.text)
    message.add_alternative(notice.html, subtype="html")
    return message


def _deliver(server: MailServer, notice: Notice) -> None:
    """Send one message; a failure is logged (never the credentials) and dropped."""
    try:
        message = _message(server, notice)
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if server.security == "ssl":
            smtp = smtplib.SMTP_SSL(
                server.host, server.port, timeout=server.timeout, context=context
            )
        else:
            smtp = smtplib.SMTP(server.host, server.port, timeout=server.timeout)
        with smtp:
            if server.security == "starttls":
                smtp.starttls(context=context)
            if server.user and server.password is not None:
                smtp.login(server.user, server.password)
            smtp.send_message(message)
        log.info("e-mail %s sent to %s", notice.kind, notice.recipient)
    except (OSError, smtplib.SMTPException, ValueError) as exc:
        # SMTP errors carry the server's reply, never what we sent to log in.
        log.warning(
            "e-mail %s to %s not sent: %s: %s",
            notice.kind,
            notice.recipient,
            type(exc).__name__,
            exc,
        )


def flush(timeout: float = 30.0) -> None:
    """Wait for the messages handed over so far (tests, and a worker about to exit)."""
    with _executor_lock:
        executor = _executor
    if executor is not None:
        executor.submit(lambda: None).result(timeout=timeout)


__all__ = [
    "MailServer",
    "Notice",
    "configure",
    "delivery_ready",
    "enabled",
    "flush",
    "share_link_first_used",
    "upload_job_failed",
]

"""First start: a global admin exists, with a password from the environment or generated once."""

from __future__ import annotations

import logging
import secrets
import sys

from sqlalchemy import select
from sqlalchemy.orm import Session

from allmicro_data import directory
from allmicro_data.catalogue.models import Organisation, OrganisationKind
from allmicro_data.settings import Settings

log = logging.getLogger(__name__)

ADMIN_ORGANISATION = "Lead partner"


def ensure_admin(session: Session, settings: Settings) -> bool:
    """Create the first admin if there is none; True when one was created."""
    if directory.count_admins(session) > 0:
        return False
    org = session.scalars(
        select(Organisation).where(Organisation.kind == OrganisationKind.LEAD_PARTNER)
    ).first()
    if org is None:
        org = directory.create_organisation(
            session, name=ADMIN_ORGANISATION, kind=OrganisationKind.LEAD_PARTNER.value
        )
    given = settings.admin_password.get_secret_value() if settings.admin_password else None
    password = given or secrets.token_urlsafe(18)
    directory.create_user(
        session,
        email=settings.admin_email,
        organisation_id=org.id,
        password=password,
        display_name="Administrator",
        is_admin=True,
    )
    log.info("created the first admin account %s", settings.admin_email)
    if not given:
        # Shown once on the console, never written to the log.
        print(
            f"\n  First admin account: {settings.admin_email}\n"
            f"  Password (shown only now): {password}\n",
            file=sys.stderr,
            flush=True,
        )
    return True

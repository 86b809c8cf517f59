"""Institutional accounts (LDAP / Active Directory entries, OpenID Connect subjects): which user,
in which organisation, an account a trusted directory vouches for signs in as.

An account is found by its identity (issuer and subject) first, then by its verified e-mail;
a new one becomes a user without a local password in the organisation the first matching
rule names. Users whose only way in is their institution (no local password) follow the
rules at every sign-in; users with a local password keep their organisation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from allmicro_data.audit import record
from allmicro_data.catalogue.models import ExternalIdentity, Organisation, User, utcnow
from allmicro_data.directory import find_user_by_email, normalise_email
from allmicro_data.settings import OrganisationRule


class AccountRefused(Exception):
    """The institution vouched for the account, but it may not sign in here (the reason goes
    to the audit log, never to the person: they see the usual refusal)."""


@dataclass(frozen=True)
class InstitutionalAccount:
    """What a directory or an identity provider says about whoever just proved who they are."""

    issuer: str  # "ldap:<search base>" or the OpenID Connect issuer
    subject: str  # the entry's DN, or the `sub` claim
    email: str | None  # only an address the institution vouches for
    display_name: str = ""
    groups: tuple[str, ...] = ()  # LDAP group DNs
    claims: Mapping[str, Any] = field(default_factory=dict)  # OpenID Connect claims


def _claim_matches(claims: Mapping[str, Any], name: str, value: str | None) -> bool:
    present = claims.get(name)
    if present is None:
        return False
    if value is None:
        return bool(present)
    if isinstance(present, list | tuple):
        return value in [str(v) for v in present]
    return str(present) == value


def rule_matches(rule: OrganisationRule, account: InstitutionalAccount) -> bool:
    """All of a rule's conditions hold for the account (a rule without any holds for all)."""
    if rule.email_domain is not None:
        domain = (account.email or "").rpartition("@")[2].lower()
        if not domain or domain != rule.email_domain.strip().lower().lstrip("@"):
            return False
    if rule.group is not None:
        wanted = rule.group.strip().lower()
        if wanted not in {g.strip().lower() for g in account.groups}:
            return False
    return rule.claim is None or _claim_matches(account.claims, rule.claim, rule.value)


def organisation_for(
    session: Session, rules: Sequence[OrganisationRule], account: InstitutionalAccount
) -> Organisation | None:
    """The organisation of the first rule that matches, or None."""
    for rule in rules:
        if rule_matches(rule, account):
            organisation = session.scalars(
                select(Organisation).where(Organisation.name == rule.organisation)
            ).first()
            if organisation is None:
                raise AccountRefused(
                    f"the rules name organisation {rule.organisation!r}, which does not exist"
                )
            return organisation
    return None


def user_for_account(
    session: Session, account: InstitutionalAccount, rules: Sequence[OrganisationRule]
) -> User:
    """The user this account signs in as, created or updated from what the institution says.

    Raises AccountRefused when a new account has no e-mail or matches no rule. Whether the user
    is active or locked is the caller's question (auth.institutional_login).
    """
    identity = session.scalars(
        select(ExternalIdentity).where(
            ExternalIdentity.issuer == account.issuer,
            ExternalIdentity.subject == account.subject,
        )
    ).first()
    user = session.get(User, identity.user_id) if identity is not None else None
    if user is None and account.email:
        user = find_user_by_email(session, account.email)
    organisation = organisation_for(session, rules, account)
    if user is None:
        if not account.email:
            raise AccountRefused("the institution gave no verified e-mail address")
        if organisation is None:
            raise AccountRefused("no organisation rule matches the account")
        user = User(
            email=normalise_email(account.email),
            display_name=account.display_name[:200],
            organisation_id=organisation.id,
            password_hash=None,
        )
        session.add(user)
        session.flush()
        record(
            session,
            "user.create",
            actor=account.issuer[:320],
            object_type="user",
            object_id=user.id,
            detail={"by": "institutional sign-in", "organisation": organisation.name},
        )
    elif user.password_hash is None:
        # The institution manages this account: its name and organisation follow it.
        if account.display_name:
            user.display_name = account.display_name[:200]
        if organisation is not None and organisation.id != user.organisation_id:
            record(
                session,
                "user.organisation",
                actor=account.issuer[:320],
                object_type="user",
                object_id=user.id,
                detail={"organisation": organisation.name},
            )
            user.organisation_id = organisation.id
    if identity is None:
        identity = ExternalIdentity(user_id=user.id, issuer=account.issuer, subject=account.subject)
        session.add(identity)
    identity.last_login_at = utcnow()
    session.flush()
    return user

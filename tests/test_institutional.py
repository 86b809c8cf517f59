"""Organisation rules for institutional accounts: the first rule whose conditions all hold names
the organisation (e-mail domain, LDAP group, OpenID Connect claim)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from allmicro_data.institutional import InstitutionalAccount, rule_matches
from allmicro_data.settings import OrganisationRule, Settings

ANA = InstitutionalAccount(
    issuer="https://idp.uni-lj.example",
    subject="ana",
    email="ana@fkkt.uni-lj.example",
    groups=("CN=Staff,OU=Groups,DC=uni,DC=example",),
    claims={"hd": "uni-lj.example", "eduperson_affiliation": ["staff", "member"]},
)


def test_an_e_mail_domain_rule_matches_the_whole_domain_only() -> None:
    assert rule_matches(OrganisationRule(organisation="F", email_domain="fkkt.uni-lj.example"), ANA)
    assert rule_matches(
        OrganisationRule(organisation="F", email_domain="@FKKT.uni-lj.example"), ANA
    )
    assert not rule_matches(OrganisationRule(organisation="U", email_domain="uni-lj.example"), ANA)
    no_mail = InstitutionalAccount(issuer="i", subject="s", email=None)
    assert not rule_matches(OrganisationRule(organisation="F", email_domain="x.example"), no_mail)


def test_a_group_rule_compares_dns_ignoring_case() -> None:
    rule = OrganisationRule(organisation="U", group="cn=staff,ou=groups,dc=uni,dc=example")
    assert rule_matches(rule, ANA)
    assert not rule_matches(OrganisationRule(organisation="U", group="cn=students"), ANA)


def test_a_claim_rule_matches_a_value_or_a_member_of_a_list() -> None:
    assert rule_matches(OrganisationRule(organisation="U", claim="hd", value="uni-lj.example"), ANA)
    assert not rule_matches(
        OrganisationRule(organisation="U", claim="hd", value="uni-mb.example"), ANA
    )
    staff = OrganisationRule(organisation="U", claim="eduperson_affiliation", value="staff")
    assert rule_matches(staff, ANA)
    assert not rule_matches(staff.model_copy(update={"value": "student"}), ANA)
    assert not rule_matches(OrganisationRule(organisation="U", claim="missing"), ANA)


def test_every_condition_of_a_rule_must_hold_and_none_is_a_catch_all() -> None:
    both = OrganisationRule(
        organisation="U", email_domain="fkkt.uni-lj.example", claim="hd", value="x"
    )
    assert not rule_matches(both, ANA)
    assert rule_matches(OrganisationRule(organisation="Guests"), ANA)


def test_incomplete_institutional_settings_fail_at_start() -> None:
    with pytest.raises(ValidationError, match="ALLMICRO_LDAP_SEARCH_BASE"):
        Settings(ldap_urls=["ldaps://dc1.uni.example"])
    with pytest.raises(ValidationError, match="ALLMICRO_OIDC_CLIENT_ID"):
        Settings(oidc_issuer="https://idp.uni.example")
    assert Settings(ldap_urls=["ldaps://dc1.uni.example"], ldap_search_base="dc=uni").ldap_urls

"""Firewall effectors: an iptables chain, ipset sets, an nftables table, or a dry-run logger.

Every backend drives the system tools in batch mode (iptables-restore, ipset restore, nft -f -)
through the one runner (logwatch/effectors/runner.py), never a shell; only validated, normalised
networks reach their input. One file per backend, each ending with its line in FIREWALLS.
"""
# ruff: noqa: I001  (the backends register in import order: the order of the CLI choices)

from logwatch.effectors.firewall.base import (
    MAX_PORTS,
    TOOL_TIMEOUT,
    Firewall,
    FirewallError,
    FirewallMissing,
    Network,
    net_text,
    normalize_net,
    remaining,
)
from logwatch.effectors.firewall.entry import (
    FIREWALLS,
    FirewallBackend,
    config_checks,
    cross_problems,
    firewall_identity,
    make_firewall,
    old_firewall,
    validate,
)

# The backends register themselves in this order (the order of the CLI choices).
from logwatch.effectors.firewall.iptables import IptablesFirewall
from logwatch.effectors.firewall.ipset import IPSET_MAX_TIMEOUT, IpsetFirewall
from logwatch.effectors.firewall.nftables import (
    NFT_MAX_TIMEOUT, NFT_SETS, NftablesFirewall, _collapse)
from logwatch.effectors.firewall.none import NoneFirewall
from logwatch.effectors.firewall.drift import EXPIRY_SLACK, drift

__all__ = [
    "EXPIRY_SLACK", "FIREWALLS", "IPSET_MAX_TIMEOUT", "MAX_PORTS", "NFT_MAX_TIMEOUT", "NFT_SETS",
    "TOOL_TIMEOUT", "Firewall", "FirewallBackend", "FirewallError", "FirewallMissing",
    "IpsetFirewall", "IptablesFirewall", "Network", "NftablesFirewall", "NoneFirewall",
    "_collapse", "config_checks", "cross_problems", "drift", "firewall_identity", "make_firewall", "net_text",
    "normalize_net", "old_firewall", "remaining", "validate",
]

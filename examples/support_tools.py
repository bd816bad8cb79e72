"""Tools of the customer-support example playbook (``examples/support_playbook.yaml``).

The data is an in-memory stand-in for a CRM, so the example runs anywhere; swap the bodies for real calls.
``build_registry()`` is what ``python -m llmrtc.playbooks chat ... --tools examples/support_tools.py`` loads.
"""

from __future__ import annotations

import itertools
from typing import Any

from llmrtc.errors import ToolExecutionError
from llmrtc.tools import ToolRegistry, define_tool

ACCOUNTS: dict[str, dict[str, str]] = {
    "1001": {"pin": "4321", "name": "Ada Lovelace", "plan": "Fiber 500"},
    "1002": {"pin": "1111", "name": "Alan Turing", "plan": "DSL 50"},
}
KNOWLEDGE_BASE: dict[str, str] = {
    "slow": "Restart the router, then check that no other device is downloading large files.",
    "no internet": "Check that the router's WAN light is green; if not, power-cycle the modem for 30 s.",
    "wifi": "Move closer to the router or switch to the 5 GHz network.",
}


def build_registry() -> ToolRegistry:
    """A fresh registry with every tool of the support playbook (tickets are per registry)."""
    tickets: dict[str, dict[str, Any]] = {}
    numbers = itertools.count(1)

    @define_tool
    def verify_user(account_id: str, pin: str) -> dict[str, str]:
        """Verify the customer's identity.

        Args:
            account_id: The account number the customer gave.
            pin: The customer's four-digit PIN.
        """
        account = ACCOUNTS.get(account_id.strip())
        if account is None or account["pin"] != pin.strip():
            raise ToolExecutionError("the account number and PIN do not match", tool_name="verify_user")
        return {"account_id": account_id, "name": account["name"], "plan": account["plan"]}

    @define_tool
    def search_knowledge_base(query: str) -> dict[str, Any]:
        """Search troubleshooting articles.

        Args:
            query: A few words describing the problem.
        """
        q = query.lower()
        hits = [{"topic": topic, "fix": fix} for topic, fix in KNOWLEDGE_BASE.items() if topic in q]
        return {"results": hits or [{"topic": "general", "fix": "Restart the router and try again."}]}

    @define_tool(interruption="finish")
    async def run_diagnostic(account_id: str) -> dict[str, Any]:
        """Run a line diagnostic on the customer's connection.

        Args:
            account_id: The verified account number.
        """
        known = account_id in ACCOUNTS
        return {"line": "ok" if known else "unknown account", "latency_ms": 18 if known else None}

    @define_tool(interruption="finish")
    def create_ticket(summary: str) -> dict[str, str]:
        """Open a support ticket.

        Args:
            summary: One sentence describing the problem.
        """
        ticket_id = f"T-{next(numbers):04d}"
        tickets[ticket_id] = {"summary": summary, "status": "open"}
        return {"ticket_id": ticket_id, "status": "open"}

    @define_tool(interruption="finish")
    def resolve_issue(ticket_id: str, resolution: str) -> dict[str, str]:
        """Close a ticket as resolved.

        Args:
            ticket_id: The ticket to close.
            resolution: What fixed the problem.
        """
        ticket = tickets.get(ticket_id)
        if ticket is None:
            raise ToolExecutionError(f"no ticket {ticket_id}", tool_name="resolve_issue")
        ticket.update(status="resolved", resolution=resolution)
        return {"ticket_id": ticket_id, "status": "resolved"}

    @define_tool(interruption="finish")
    def escalate(ticket_id: str, reason: str) -> dict[str, str]:
        """Hand the ticket to a second-line engineer.

        Args:
            ticket_id: The ticket to escalate.
            reason: Why the fix did not work.
        """
        ticket = tickets.setdefault(ticket_id, {"summary": reason})
        ticket["status"] = "escalated"
        return {"ticket_id": ticket_id, "status": "escalated"}

    return ToolRegistry(
        [verify_user, search_knowledge_base, run_diagnostic, create_ticket, resolve_issue, escalate]
    )

"""What a node that takes applications (a village, a township window) does with what comes back.

The table *message kind → handler* for downlink addressed to such a node; the tiers use it
(village_node/tier.py, township_node/tier.py) so both apply what comes back the same way.
"""

from __future__ import annotations

import sqlite3

from shared.core.clock import iso
from shared.services import appointments, casework, feedback, green_channel, licences, site_visits, things
from sync import rotation


def handlers(node) -> dict:
    """``{kind: handler(conn, message)}`` for downlink messages addressed to ``node``."""

    def case_update(conn: sqlite3.Connection, message: dict) -> None:
        casework.apply_update(conn, message["body"], node.trust(conn))
        if node.emit is not None:  # a node that decides: a result may start a later step of a 一件事
            things.on_status(conn, node, message["body"]["case_id"], message["body"]["event"]["action"], node.emit)

    return {
        "case.update": case_update,
        "complaint.answer": lambda conn, message: feedback.apply_answer(conn, message["body"]),
        appointments.ANSWER_KIND: lambda conn, message: appointments.apply_answer(conn, message["body"],
                                                                                 iso(node.now())),  # 预约
        "case.site_visit": lambda conn, message: site_visits.apply_downlink(conn, message["body"]),  # history only
        green_channel.DOWNLINK_KIND: lambda conn, message: green_channel.apply_downlink(conn, message["body"]),
        licences.REVOKE_KIND: lambda conn, message: licences.apply_revocation(conn, message["body"]),
        rotation.KIND: lambda conn, message: rotation.apply_command(conn, node, message),  # 轮换密钥
    }

"""SQL views of the trace database that answer the common questions in one query.

Pipeline position: created by the trace migrations (``recnet.trace.migrations``, version 4) in
every trace file, next to the tables of ``recnet.trace.schema``; read with ``sqlite3``, datasette
or ``recnet traces``. Nothing writes to them.

- ``client_inbox``: what a client received at a step and why: each router message with the
  router's label and profile text at that step, the similarity that selected the client, what
  became of the message (accepted, rejected, dropped, buffered) and the text of the filter rule
  that decided. ``SELECT * FROM client_inbox WHERE client_id = 'u:42' AND step = 7``.
- ``candidates``: the evaluation candidate lists of ``candidate_lists`` one row per candidate
  (``run_id, split, user_id, position, item_id, is_positive``), the table traces before schema
  version 11 held. Created by migration 11, which converts such a table's rows.
- ``module_changes``: which filter rules and routers changed and why: every new rule or router
  version after initialisation with its reason (integrate, optimize, split, merge, rollback) and,
  when the backward phase caused it, the gradient's judgement, reason and suggestion.
"""

from __future__ import annotations

CLIENT_INBOX = """
CREATE VIEW IF NOT EXISTS client_inbox AS
SELECT
    m.run_id,
    m.step,
    m.client_id,
    client.kind AS client_kind,
    client.label AS client_label,
    m.router_id,
    router.label AS router_label,
    (SELECT v.text FROM router_versions AS v
      WHERE v.run_id = m.run_id AND v.router_id = m.router_id AND v.step <= m.step
      ORDER BY v.step DESC, v.version DESC LIMIT 1) AS router_profile,
    m.score,
    m.status,
    m.decided_step,
    m.rule_id,
    (SELECT f.text FROM filter_rule_versions AS f
      WHERE f.run_id = m.run_id AND f.rule_id = m.rule_id AND f.agent_id IN (m.client_id, '*')
        AND f.step <= COALESCE(m.decided_step, m.step)
      ORDER BY f.agent_id = '*', f.step DESC, f.version DESC LIMIT 1) AS rule_text,
    m.id AS message_id
FROM messages AS m
LEFT JOIN agents AS client ON client.run_id = m.run_id AND client.agent_id = m.client_id
LEFT JOIN agents AS router ON router.run_id = m.run_id AND router.agent_id = m.router_id
"""

MODULE_CHANGES = """
CREATE VIEW IF NOT EXISTS module_changes AS
SELECT
    f.run_id, f.step, 'filter_rule' AS module, f.agent_id AS owner_id, f.rule_id AS target_id,
    f.version, f.parent_version, f.reason, f.text, f.active, NULL AS tau, f.gradient_id,
    g.judgement, g.reason AS gradient_reason, g.suggestion
FROM filter_rule_versions AS f
LEFT JOIN gradients AS g ON g.run_id = f.run_id AND g.gradient_id = f.gradient_id
WHERE f.step >= 0
UNION ALL
SELECT
    v.run_id, v.step, 'router', v.router_id, v.router_id,
    v.version, v.parent_version, v.reason, v.text, 1, v.tau, v.gradient_id,
    g.judgement, g.reason, g.suggestion
FROM router_versions AS v
LEFT JOIN gradients AS g ON g.run_id = v.run_id AND g.gradient_id = v.gradient_id
WHERE v.step >= 0
"""

#: View name → its CREATE statement, in creation order.
VIEWS: dict[str, str] = {"client_inbox": CLIENT_INBOX, "module_changes": MODULE_CHANGES}


#: Not in ``VIEWS``: migration 4 creates those, and a file at version 3 still has a ``candidates``
#: table then; migration 11 creates this view once it has converted that table.
CANDIDATES = """
CREATE VIEW IF NOT EXISTS candidates AS
SELECT
    c.run_id,
    c.split,
    c.user_id,
    CAST(j.key AS INTEGER) AS position,
    j.value AS item_id,
    COALESCE(j.key = c.positive, 0) AS is_positive
FROM candidate_lists AS c, json_each(c.items_json) AS j
"""

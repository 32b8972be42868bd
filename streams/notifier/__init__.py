"""``pulse notifier``: the churn alerts, ledger entries and engagement messages, delivered to
HTTP endpoints as signed webhooks.

Theory of operation. The notifier is its own process in its own consumer group
(``PULSE_NOTIFIER_GROUP_ID``), so it scales and fails apart from the workers. It reads the
output topics, and for every record asks each configured endpoint whether it wants it
(``messages.wants``: the stream, the alert level or ledger rule, the backfill marker). Each
endpoint has its own bounded queue and its own delivery tasks (``delivery.EndpointWorker``),
so a slow endpoint slows only itself until its queue is full. A delivery is a Standard
Webhooks POST of a CloudEvents-shaped JSON body; it is retried with exponential backoff and
full jitter on 5xx, timeouts, connection errors and 429 (whose ``Retry-After`` wins), and
after the last attempt it goes to the ``notifications-deadletter`` topic.

At-least-once: a partition's offset is committed only up to the first record that some
endpoint has not yet delivered or dead-lettered (``offsets.OffsetTracker``). A crash re-sends
what was not committed, with the same ``webhook-id``; receivers drop duplicates by it.

Modules: ``config`` (the YAML file, validated), ``messages`` and ``retry`` (pure: filters,
envelopes, backoff, Retry-After), ``offsets`` (the commit frontier), ``delivery`` (HTTP),
``service`` (the consumer process and ``redrive``).
"""

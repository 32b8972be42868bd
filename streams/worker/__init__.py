"""The worker runtime: what ``pulse worker`` runs.

The Faust app and its web pages (``app``, ``api``, ``openapi``, ``health``), the engine that
consumes a partition's records (``engine``), the store and its Lua (``store``, ``lua/``,
``outbox``, ``keys``), time-driven and replay bookkeeping (``replays``, ``poison``,
``recovery``), topics and partitioning (``topics``, ``partitioning``, ``admin``,
``producer``), dead letters (``dlqlog``), metrics and KPI gauges (``metrics``, ``kpis``)
and the customer views it serves (``views``). Nothing here imports ``streams.tools``.
"""

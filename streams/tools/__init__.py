"""The tools around the worker: the ``pulse`` command line (``cli``) and what it runs
besides the worker: the development stack (``devstack``, ``devrun``), the simulator
(``simulator``, ``simulate``), replays of files (``replay``), offline evaluation and fitting
(``evaluate``, ``fit``) and the dead-letter browser (``deadletters``). Tools may use the
worker's modules (its store, topics, views); the worker never imports a tool.
"""

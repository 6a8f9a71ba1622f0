"""Tools beside the runtime: the ``snak-runtime`` command line, the simulator, trace files.

Nothing in the runtime imports this package (``import snak_runtime`` stays light, and the
dependency points one way: tools use the runtime's public surface and its configuration
resolver, never the reverse; ``tests/test_tools_layering.py`` checks both). This file
imports nothing, so ``python -m snak_runtime`` loads only what its command needs.

- ``_cli``: the parser, the command registry, ``config`` and ``simulate`` (only it prints);
- ``_demo``: the quickstart scenario behind ``demo``;
- ``_simulate_params``: the workload's parameters (one table: flags, bounds, validation),
  ``SimulationConfig`` and the manager it configures;
- ``_simulate``: ``simulate()`` and ``SimulationResult``; ``_simulate_run``: the traffic
  (arrivals, leases, invalidations, a burst); ``_virtual_time``: the event loop that jumps
  to its next timer;
- ``_trace``: request traces for ``simulate --trace``.
"""

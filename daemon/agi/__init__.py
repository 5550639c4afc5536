"""FastAGI for Asterisk: the dialplan asks pnbridge to wake a callee's phones
(``AGI(agi://127.0.0.1:4573/wake)``) and to follow the call up (``/missed``,
``/answered-elsewhere``), through the same fan-out as the push API."""

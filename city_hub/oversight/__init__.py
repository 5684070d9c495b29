"""电子监察 and 统计 at the hub (supervisor, admin), by concern, lowest first.

- :mod:`.filters`: what the statistics are restricted to and grouped by (query parameters, SQL);
- :mod:`.facts`: per-case facts (受理, deadline, decision, transmission…) and their stored copy,
  the ``case_facts`` table the hub's scheduled pass keeps filled;
- :mod:`.statistics`: the figures, aggregated in SQL, their Python reference and the CSV export;
- :mod:`.board`: the 电子监察 board;
- :mod:`.pages`: the Flask blueprint ``oversight`` (pages, CSV/JSON export, ``GET /api/v1/stats``).
"""

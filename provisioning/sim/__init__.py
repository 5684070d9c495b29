"""``liandong sim``: a whole county on loopback, with faults, and a count of what got through.

The hub and every township are real ``liandong node serve`` processes (waitress, their own
SQLite files, townships syncing to the hub with their own scheduler); villages live in this
process, each with its own data folder, key, SQLite file and :class:`sync.node.Node`, and
their sync rounds are the real :func:`sync.node_sync.run_round`, driven by a scheduler loop.
Every node is enrolled through the real flow (tokens at the hub, ``enrol_node`` over HTTP).

Faults, all drawn from one seeded RNG per link:

- village → township: a ``requests`` session that drops requests, loses responses (the
  server did the work, the client never hears), delivers requests twice (concurrently),
  truncates request or response bodies and delays; pushes are shuffled (reordered);
- township → hub: the same faults, in a loopback proxy the townships use as their parent;
- townships taken offline for long stretches, townships and the hub killed with SIGKILL
  while they work, then restarted;
- villages whose PC clock is days ahead or behind;
- a forged envelope (unenrolled key; a real key claiming another origin), replayed envelopes
  and a replayed HTTP request, and a village revoked mid-run that keeps taking cases.

At the end the faults stop, rounds run until nothing moves (bounded), and the county is
counted. The last line printed is a JSON summary; the exit status is non-zero if any case
was lost or duplicated, or anything forged, replayed or revoked was accepted.

``liandong sim --throughput`` runs the same county without faults and measures how many cases
it absorbs per second (:mod:`.throughput`).

Modules, lowest first: :mod:`.processes` (node processes), :mod:`.faults` (link and process
faults), :mod:`.county` (configuration, building the county, applications), :mod:`.attacks`
(forged, replayed, revoked senders), :mod:`.report` (the count), :mod:`.throughput` (the
throughput run), :mod:`.loop` (the run) and :mod:`.cli` (the ``liandong sim`` command).
"""

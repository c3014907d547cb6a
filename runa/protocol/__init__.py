"""The wire contract the components, their clients and the configuration share (DESIGN §7).

It sits above the libraries and below the service base: a component's daemon, a client
and ``runa config check`` judge a value by the same rule here, and none of them has to
import another component to do so. Each service's requests (``splinfer``, ``tieto``,
built and read through ``payloads``), the inference parameters (``params``, ``ranges``),
the names that become files (``names``), a grounded answer's shapes (``answer``) and how
a fault ends a command (``faults``); ``doc`` renders docs/protocol.md's request tables.
"""

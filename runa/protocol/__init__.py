"""The wire contract the components, their clients and the configuration share (DESIGN §7).

It sits above the libraries and below the service base: a component's daemon, a client
and ``runa config check`` judge a value by the same rule here, and none of them has to
import another component to do so. Today it holds the inference parameters' ranges
(``ranges``) and the topic-name rule (``names``).
"""

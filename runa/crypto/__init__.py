"""Cryptography shared by the components: libsodium on wipeable buffers (``sodium``) and the
sealed payloads of the coven and alethia buses (``sealed``), and keeping a process that holds
secrets out of core dumps (``process``)."""

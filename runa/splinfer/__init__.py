"""splinfer: llama.cpp inference, independent of the bus.

``engine.Engine`` loads one model (after ``fit.check_fit`` says it fits) and
answers chat messages token by token; ``params`` holds the inference options
under llama.cpp's names; ``prompt`` turns messages into tokens safely and keeps
long conversations inside the context. The daemon that puts this on the bus is
a separate module and the only one that knows about envelopes.
"""

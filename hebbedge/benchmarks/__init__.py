"""Benchmarks of the library, apart from it: `accuracy` (the i.i.d. Hebbian learner against its backprop
twin, `hebbedge bench accuracy`) and `speed` (step time and memory, `hebbedge bench speed`). The
library never imports them."""

"""Benchmarks and experiment protocols, apart from the library they exercise: `accuracy` (the i.i.d.
Hebbian learner against its backprop twin, `hebbedge bench accuracy`), `speed` (step time and memory,
`hebbedge bench speed`), `softhebb` (multilayer SoftHebb's greedy protocol, `hebbedge softhebb`) and
`semisup` (FastHebb's semi-supervised protocol, `hebbedge semisup`). The library never imports them."""

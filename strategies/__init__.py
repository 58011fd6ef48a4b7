"""The library: the batched sampler, generators, pruners and aggregators."""

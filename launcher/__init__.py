"""What starts Storegate: the ``storegate`` command, the demo and the local broker launcher.

This is the composition root, the one package that imports several applications (the hub,
the edge agent, the simulated devices, provisioning). Each subcommand imports its side
lazily, so a gateway that has only ``storegate[edge]`` installed runs ``storegate agent``
without the hub's web stack. Nothing else in the project imports this package except the
tests and benchmarks, which start brokers and processes the way the demo does.
"""

module relayctl.dev/scale-sim

go 1.26.0

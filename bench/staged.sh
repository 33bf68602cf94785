#!/bin/sh
# bench/run.ts's stage-in method: aria2c runs this when a node's copy of the set is complete (before
# it seeds on). The node's script reads the line from the FIFO it gave aria2c as fd 3.
echo staged >&3

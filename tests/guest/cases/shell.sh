#!/bin/sh
# ring3-guest: config=noiommu
# Nothing to check: with --interactive, a shell in a freshly booted guest.
true

"""`make run`: the whole Conduit stack on one machine, and the sample workload that shows it work.

run.py starts Redis (unless REDIS_URL is set) and the Procfile's processes under honcho, waits
until /ready, sends workload.py's messages through the bus, reports results as tally.py counts
them, and stops everything on Ctrl-C. flower.py launches Flower with settings' basic auth. This
package orchestrates; the processes it starts live in their own packages, and nothing imports it.
"""

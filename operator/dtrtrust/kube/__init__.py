"""The only place that talks to the Kubernetes API.

``cluster`` uses the official ``kubernetes`` client for the operator; ``node`` uses
``pykube-ng`` for the agent, which runs on every node and must stay small. This
package imports neither, so importing one side never loads the other's client.
An import-linter contract keeps every other module away from both clients.
"""

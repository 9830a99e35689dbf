"""The components of the Flower App: `hebbedge fleet`'s client and server (hebbedge.export.fleet), for `flwr run`."""

from hebbedge.export.fleet import deployed_client_app, deployed_server_app

clientapp = deployed_client_app()
serverapp = deployed_server_app()

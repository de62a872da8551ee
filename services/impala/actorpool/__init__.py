"""ActorPool ingress: the gRPC server env clients dial into (inverted actor link)."""

"""Push: a PBX's push request, validated, the device pairs it names chosen, and the push fanned out
to the transport plugin."""

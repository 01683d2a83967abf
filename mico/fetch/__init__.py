"""Step 1's transfers: the hub through huggingface_hub, plain URLs, and archive import.

``download`` runs the step (which source, then the checks); ``hub`` fetches bundle files from
a Hugging Face repository with huggingface_hub; ``progress`` is its one display for all
workers; ``urls`` fetches the few files that live on no hub (the CIFAR-10 and Purchase-100
tarballs, ``--url`` zips, ``--base-url`` mirrors); ``archives`` imports zips, folders and
tarballs safely.  Nothing is imported here, so that ``import mico.fetch`` stays cheap.
"""

"""OCI images: snapshots as image layouts, layer tars and blobs.

``tarformat`` reads and writes tar headers (the reader treats its input as
hostile); ``tarwriter`` turns a stored layer into an OCI layer tar and
``tarextractor`` a (hostile) layer tar into a layer tree (names checked by
``tarnames``, small files written by ``filewriter``'s helper process fed by
``helperfeed``), which ``extractedlayer`` stages and publishes; ``compress``
handles gzip and zstd, ``inflate`` reads gzip; ``blobcache`` keeps compressed layers in the store;
``image`` says what an image is (media types, labels, descriptors, the
manifest parse); ``export`` builds images and ``importer`` imports them (the
API the remotes use), with ``imageconfig`` reading configs and
``chaincheck`` checking imported chains against their records; ``history``
carries ancestors' records; ``layout`` reads and writes OCI image layouts
and docker archives.
"""

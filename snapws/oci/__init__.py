"""OCI images: snapshots as image layouts, layer tars and blobs.

``tarformat`` reads and writes tar headers (the reader treats its input as
hostile); ``tarlayer`` turns a stored layer into an OCI layer tar and a layer
tar into a stored layer; ``compress`` handles gzip and zstd; ``blobcache``
keeps compressed layers in the store; ``image`` builds and imports images
(the API the remotes use); ``layout`` reads and writes OCI image layouts and
docker archives.
"""

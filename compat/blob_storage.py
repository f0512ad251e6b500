"""``common.blob_storage`` → :mod:`logship`: the background uploader with the older methods."""

from logship import AsyncBlobStorageUploader, BlobUploader

__all__ = ["AsyncBlobStorageUploader", "BlobUploader"]

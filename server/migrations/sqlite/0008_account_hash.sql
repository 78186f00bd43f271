-- The Apple Account the device's App Store is signed in to, as Apple's opaque hash
-- (DeviceInformation iTunesStoreAccountHash); compared with the VPP user's idHash.
ALTER TABLE devices ADD COLUMN itunes_account_hash TEXT;

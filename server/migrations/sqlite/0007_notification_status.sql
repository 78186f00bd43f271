-- Whether Apple notifies this server about the token, and if not, why (the server then
-- polls): a notification URL Apple cannot reach, or notifications turned off.
ALTER TABLE vpp_tokens ADD COLUMN notifications TEXT;

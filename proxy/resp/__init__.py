"""The RESP front end: codec, commands, connection, slots and the server that holds them."""

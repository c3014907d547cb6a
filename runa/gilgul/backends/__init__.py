"""What runs the components for gilgul's core: systemd's user manager, or plain children."""
